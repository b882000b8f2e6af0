"""cgroup v2: limits from a cgroup delegated to the runner, as a systemd scope or a
container hands one over. Needs a cgroup v2 machine and root (to make the delegated
cgroup); this CI machine runs cgroup v1, so these run on the device machine
(`tests/device-checks.sh`), where its non-root variant runs too."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import cgroup
from tests.runner.conftest import JOBS, cli_runner
from tests.runner.test_sandbox import records, status

pytestmark = pytest.mark.skipif(
    not (cgroup.unified() and os.geteuid() == 0),
    reason="needs cgroup v2 and root, to delegate a cgroup (CI's machine runs cgroup v1)",
)
ENTER = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
"""`sh -c ENTER sh CGROUP ARGV...`: start ARGV inside CGROUP, as a delegating manager does."""


def _rmdir_tree(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        cgroup.rmdir(child, wait=5.0)
    cgroup.rmdir(path, wait=5.0)


@pytest.fixture
def delegated() -> Iterator[Path]:
    """A cgroup with memory and pids available to it, empty, for one runner to be put in."""
    (cgroup.ROOT / "cgroup.subtree_control").write_text("+memory +pids")
    path = cgroup.ROOT / f"srtest-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir()
    yield path
    with contextlib.suppress(OSError):
        for pid in (path / "cgroup.procs").read_text().split():
            os.kill(int(pid), 9)
    _rmdir_tree(path)


def _train_inside(
    delegated: Path, environ: dict[str, str], cwd: Path, *args: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sh", "-c", ENTER, "sh", str(delegated), sys.executable, "-m", "runner.cli", *args],
        env=environ,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_runner_alone_in_a_delegated_cgroup_moves_aside_and_holds_the_limits(
    delegated: Path, cli_environ: dict[str, str], tmp_path: Path
) -> None:
    limits = ("--memory", "150M", "--processes", "20")
    proc = _train_inside(
        delegated,
        cli_environ,
        tmp_path,
        "train",
        "--name",
        "hog",
        *limits,
        str(JOBS / "hog.py"),
        "1000",
    )
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out
    run = cli_runner(cli_environ, tmp_path)
    (held,) = [r for r in records(run, "hog") if r["event"] == "sandbox.limits"]
    assert held["memory"] == held["processes"] == "cgroup v2", held
    assert Path(held["cgroup"]).parent == delegated, held
    assert "memory limit of 150.0 MiB exceeded" in status(run, "hog")["reason"]
    # the runner moved itself (and only itself) into a leaf of its own, named for it
    (leaf,) = [p for p in delegated.iterdir() if p.is_dir()]
    assert leaf.name.startswith(f"{cgroup.PREFIX}{proc.pid}.")
    assert leaf.name.endswith(cgroup.RUNNER_LEAF)


def test_a_root_runner_that_shares_its_cgroup_moves_no_one_and_uses_a_top_cgroup(
    delegated: Path, cli_environ: dict[str, str], tmp_path: Path
) -> None:
    """Root's runner in a cgroup with other processes (a service's, a VM agent's): it may
    not move them, so it keeps its jobs under /sys/fs/cgroup/sandbox-runner. An ordinary
    user's runner gets rlimits there instead (tests/device-checks.sh, section cgroup)."""
    other = subprocess.Popen(["sh", "-c", ENTER, "sh", str(delegated), "sleep", "300"])
    try:
        time.sleep(0.5)
        proc = _train_inside(
            delegated, cli_environ, tmp_path, "train", "--name", "shared", "--memory", "150M",
            str(JOBS / "hog.py"), "1000",
        )  # fmt: skip
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode != 0, out
        run = cli_runner(cli_environ, tmp_path)
        (held,) = [r for r in records(run, "shared") if r["event"] == "sandbox.limits"]
        assert held["memory"] == "cgroup v2", held
        assert Path(held["cgroup"]).parent == cgroup.ROOT / cgroup.TOP, held
        assert "memory limit of 150.0 MiB exceeded" in status(run, "shared")["reason"]
        assert str(other.pid) in (delegated / "cgroup.procs").read_text().split()
    finally:
        other.kill()
        other.wait()
