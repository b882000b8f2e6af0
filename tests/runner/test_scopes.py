"""The scopes layer (Landlock): a job's abstract Unix sockets and signals reach its own
processes only. The host's abstract sockets, played by the boundary's agent, are in
`test_boundary.py`; here, signals where no pid namespace hides the user's other processes,
what an older kernel gets instead, and a step that cannot be scoped.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.sandbox import SandboxPolicy, SandboxUnavailableError, check, landlock, scopes
from runner.settings import RunnerSettings
from runner.store import JobStore
from tests.runner.conftest import JOBS, RunCli
from tests.runner.test_process import alive
from tests.runner.test_sandbox import BWRAP, output, records, status

INTRUDER = str(JOBS / "intruder.py")
SCOPED = landlock.abi() >= landlock.SCOPES_ABI


@pytest.fixture
def bystander() -> Iterator[int]:
    """A process of the same user that no job started: the runner's, another tool's."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_without_bubblewrap_a_job_signals_its_own_processes_and_no_other(
    runner_cli: RunCli, cli_environ: dict[str, str], bystander: int
) -> None:
    cli_environ["RUNNER_BWRAP"] = "/nonexistent/bwrap"  # no pid namespace: every pid is there
    runner_cli("train", "--name", "hostile", INTRUDER, "kill", str(bystander))
    (line,) = output(records(runner_cli, "hostile"))
    (degraded,) = [r for r in records(runner_cli, "hostile") if r["event"] == "sandbox.degraded"]
    if SCOPED:
        assert line.startswith("refused: PermissionError"), line
        assert alive(bystander)
        assert "signals to the user's other processes" not in degraded["not_enforced"]
    else:  # an older kernel: the signal goes, and the job's log says it could
        assert line == "sent"
        assert "signals to the user's other processes" in degraded["not_enforced"]
    runner_cli("train", "--name", "itself", INTRUDER, "own", "-")
    assert output(records(runner_cli, "itself")) == ["own: -15"]


def test_an_older_kernel_is_named_in_auto_and_refused_in_strict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Landlock's ABI 5 (Linux 6.10), which no machine here runs: its gaps, and their fixes."""
    monkeypatch.setattr(scopes, "abi", lambda: 5)
    bwrap = RunnerSettings().bwrap
    gaps = check(SandboxPolicy(mode="auto"), bwrap)
    layers = [g.layer for g in gaps if g.cause.startswith("this kernel's Landlock is ABI 5")]
    assert "the host's abstract Unix sockets (network on)" in layers
    assert any("--no-network" in (g.fix or "") for g in gaps)
    with pytest.raises(SandboxUnavailableError, match="abstract Unix sockets"):
        check(SandboxPolicy(mode="strict"), bwrap)
    isolated = check(SandboxPolicy(mode="auto", network=False), bwrap)
    assert not any("abstract" in g.layer for g in isolated)  # a network of its own has none
    assert check(SandboxPolicy(mode="off"), bwrap) == ()


@pytest.mark.skipif(not SCOPED, reason="this kernel has no Landlock scopes to nest")
def test_a_step_that_cannot_be_scoped_never_runs(
    cli_environ: dict[str, str], tmp_path: Path, settings: RunnerSettings
) -> None:
    """Landlock nests 16 domains at most: a runner already in 16 cannot scope its job."""
    nest = (
        "import runpy, sys; from runner.sandbox import landlock\n"
        "for _ in range(16): landlock.restrict()\n"
        "sys.argv[0] = 'runner'; runpy.run_module('runner.cli', run_name='__main__')"
    )
    marker = tmp_path / "ran"
    job = tmp_path / "job.py"
    job.write_text(f"open({str(marker)!r}, 'w').close()\n")
    argv = [sys.executable, "-c", nest, "train", "--name", "unscoped", str(job)]
    proc = subprocess.run(
        argv, env=cli_environ, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert proc.returncode == landlock.FAILED, proc.stderr
    assert not marker.exists()
    store = JobStore(settings.state_dir)
    record = store.load("unscoped")
    assert record.status == "Failed" and record.exit_code == landlock.FAILED
    assert record.reason == (
        "node-0 exited with code 125: its sandbox could not be set up, so it never ran "
        "(its log says why)"
    )
    lines = [r["line"] for r in store.records("unscoped") if r["event"] == "output"]
    assert lines == [
        "sandbox-runner: cannot scope the job with Landlock (Argument list too long): "
        "its sockets and signals would not be its own only"
    ]


def test_the_scope_is_on_the_steps_command_line_before_bubblewrap(runner_cli: RunCli) -> None:
    runner_cli("train", "--name", "scoped", str(JOBS / "report.py"), "X")
    (start,) = [r for r in records(runner_cli, "scoped") if r["event"] == "job.start"]
    argv = start["argv"]
    assert status(runner_cli, "scoped")["status"] == "Complete"
    if not SCOPED:
        assert str(scopes.LAUNCHER) not in argv
        return
    at = argv.index(str(scopes.LAUNCHER)) - 3
    assert argv[at : at + 5] == [sys.executable, "-I", "-S", str(scopes.LAUNCHER), "--"]
    assert all(Path(arg).name != "bwrap" for arg in argv[:at])  # it scopes bubblewrap too
    assert Path(argv[at + 5]).name == ("bwrap" if BWRAP else "python")
