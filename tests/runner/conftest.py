"""Runner fixtures: settings over a private cache and state dir, and the CLI as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.settings import RunnerSettings
from runner.store import JobStore
from tests.conftest import UvSpy

JOBS = Path(__file__).parent.parent / "helpers" / "jobs"

RunCli = Callable[..., subprocess.CompletedProcess[str]]

TORCH = ["torch==2.13.0", "numpy"]
"""The torch tests' package set: the local CPU build, and numpy so torch does not warn."""


@pytest.fixture
def settings(tmp_path: Path, wheelhouse: Path, uv_spy: UvSpy) -> RunnerSettings:
    return RunnerSettings(
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        no_index=True,
        find_links=[str(wheelhouse)],
        uv=str(uv_spy.path),
        cancel_grace=1.0,
    )


@pytest.fixture
def store(settings: RunnerSettings) -> JobStore:
    return JobStore(settings.state_dir)


@pytest.fixture
def cli_environ(settings: RunnerSettings) -> dict[str, str]:
    return {
        **os.environ,
        "RUNNER_CACHE_DIR": str(settings.cache_dir),
        "RUNNER_STATE_DIR": str(settings.state_dir),
        "RUNNER_NO_INDEX": "1",
        "RUNNER_FIND_LINKS": " ".join(settings.find_links),
        "RUNNER_UV": str(settings.uv),
        "RUNNER_CANCEL_GRACE": "1",
    }


@pytest.fixture
def environ(cli_environ: dict[str, str]) -> Iterator[dict[str, str]]:
    """`cli_environ` for the `runner` command through its resident runner (which it stops)."""
    env = {k: v for k, v in cli_environ.items() if k not in ("RUNNER_SERVER", "XDG_RUNTIME_DIR")}
    yield env
    runner = str(Path(sys.executable).parent / "runner")
    subprocess.run([runner, "server", "stop"], env=env, capture_output=True, check=False)


def cli_runner(
    environ: dict[str, str], cwd: Path, *global_options: str, timeout: float = 600
) -> RunCli:
    """`runner ...` as a user types it: a real process, its output captured."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "runner.cli", *global_options, *args],
            capture_output=True,
            text=True,
            check=False,
            env=environ,
            cwd=cwd,
            timeout=timeout,
        )
        if check:
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    return run


def in_the_foreground(*argv: str) -> list[str]:
    """`argv` run with its signals as a terminal's foreground command has them: Ctrl-C's
    SIGINT, SIGQUIT and SIGHUP at their defaults, also where the tests were started with
    them ignored (`nohup`, or `cmd &` in a script), which a program rightly keeps."""
    reset = (
        "import os, signal, sys\n"
        "for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):\n"
        "    signal.signal(s, signal.SIG_DFL)\n"
        "os.execvp(sys.argv[1], sys.argv[1:])\n"
    )
    return [sys.executable, "-c", reset, *argv]


def background(environ: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    """`runner ARGS...` started and left running, its output discarded."""
    return subprocess.Popen(
        [sys.executable, "-m", "runner.cli", *args],
        env=environ,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def runner_cli(cli_environ: dict[str, str], tmp_path: Path) -> RunCli:
    return cli_runner(cli_environ, tmp_path)


def _local_torch_wheel() -> bool:
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    return any(list(Path(f).glob("torch-2.13.0*.whl")) for f in folders if Path(f).is_dir())


@pytest.fixture(scope="session")
def torch_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _local_torch_wheel():
        why = "no torch 2.13.0 wheel in PIP_FIND_LINKS: torch would come from PyPI (GBs)"
        if (
            os.environ.get("SANDBOX_RUNNER_REQUIRE_TORCH_TESTS") == "1"
        ):  # CI: the DDP claims must run
            pytest.fail(why)
        pytest.skip(why)
    return tmp_path_factory.mktemp("torch-cache")
