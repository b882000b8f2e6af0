"""Fixtures shared by every test: real uv, real venvs, wheels built on the spot."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from envs import EnvCache, EnvSpec, IndexConfig
from envs.builder import default_uv
from envs.requirements import parse_all
from tests.wheelhouse import populate


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


@pytest.fixture(autouse=True)
def _no_environ_leaks() -> Iterator[None]:
    """Fail any test that leaves `os.environ` changed."""
    before = _environ()
    yield
    after = _environ()
    if before != after:
        changed = sorted(set(before.items()) ^ set(after.items()))
        os.environ.clear()
        os.environ.update(before)
        pytest.fail(f"test leaked changes to os.environ: {changed}")


@pytest.fixture(autouse=True)
def _private_runner_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the user's real cache or job records."""
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "default-cache"))
    monkeypatch.setenv("RUNNER_STATE_DIR", str(tmp_path / "default-state"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # nor the machine's pip files
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # a resident runner of the test's own
    if os.geteuid() == 0:
        # root's jobs run as an unprivileged user (runner/sandbox/identity.py), which reads the
        # scripts the tests write here as it reads any user's: pytest makes the folder 0700
        tmp_path.chmod(0o755)


@pytest.fixture(autouse=True)
def _standbys_dropped() -> Iterator[None]:
    """The standbys a test's SDK backends started end with the test, as at a process's exit."""
    yield
    from runner.warm.pool import close_all

    close_all()


@pytest.fixture(autouse=True)
def _servers_stopped(tmp_path: Path) -> Iterator[None]:
    """A resident runner that a test's `runner` commands started ends with the test (it
    would wait out its idle time, holding the test's folders)."""
    yield
    import signal

    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runner.server" in argv and any(str(tmp_path).encode() in a for a in argv):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGTERM)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return populate(tmp_path_factory.mktemp("wheelhouse"))


class UvSpy:
    """A wrapper around the real uv that records each call and can hang at one stage.

    Control lives in files beside the wrapper, because the cache scrubs the
    environment it gives uv.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "uv"
        self.calls_file = root / "calls"
        self.hang_file = root / "hang_at"
        self.path.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >> "{self.calls_file}"\n'
            f'hang=$(sed -n 1p "{self.hang_file}" 2>/dev/null)\n'
            f'secs=$(sed -n 2p "{self.hang_file}" 2>/dev/null)\n'
            f'"{default_uv()}" "$@"; rc=$?\n'
            'case "$*" in "$hang"*) [ -n "$hang" ] && sleep "${secs:-300}";; esac\n'
            "exit $rc\n"
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IEXEC)

    def calls(self, verb: str = "") -> list[str]:
        """uv calls so far whose subcommand starts with `verb` (`venv`, `pip sync`, ...)."""
        if not self.calls_file.exists():
            return []
        return [c for c in self.calls_file.read_text().splitlines() if c.startswith(verb)]

    def hang_after(self, stage: str | None, seconds: float = 300) -> None:
        """Make uv sleep after a call whose subcommand starts with `stage` (None: never)."""
        if stage is None:
            self.hang_file.unlink(missing_ok=True)
        else:
            self.hang_file.write_text(f"{stage}\n{seconds:g}\n")


@pytest.fixture
def uv_spy(tmp_path: Path) -> UvSpy:
    return UvSpy(tmp_path / "uvspy")


@pytest.fixture
def cache(tmp_path: Path, uv_spy: UvSpy) -> EnvCache:
    return EnvCache(tmp_path / "cache", uv_binary=str(uv_spy.path))


@pytest.fixture
def offline(wheelhouse: Path) -> IndexConfig:
    """Index configuration that can only see the test wheelhouse."""
    return IndexConfig(find_links=(str(wheelhouse),), no_index=True)


@pytest.fixture
def make_spec(offline: IndexConfig):  # type: ignore[no-untyped-def]
    def make(requirements: Sequence[str], index: IndexConfig | None = None) -> EnvSpec:
        return EnvSpec(tuple(parse_all(requirements)), index or offline)

    return make
