"""The sandbox around a job, for real: bubblewrap, network namespaces, cgroups, rlimits, signals.

The layers that need bubblewrap are checked where it is installed (`.ci/run`
installs it); on a machine without it the same tests check the other half of
the contract: `auto` says what it cannot enforce, `strict` refuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import cgroup
from runner.job import execute
from runner.outcome import Cause
from runner.process import end_tree, start_ticks, tagged
from runner.sandbox import SandboxPolicy
from runner.settings import RunnerSettings
from runner.spec import JobSpec, ScriptEntry
from runner.store import JobStore
from tests.runner.conftest import JOBS, RunCli, cli_runner
from tests.runner.test_process import alive, wait_for

BWRAP = RunnerSettings().bwrap is not None
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bubblewrap is not installed")


def records(run: RunCli, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run("logs", name, "--json").stdout.splitlines()]


def output(recs: list[dict[str, Any]]) -> list[str]:
    return [r["line"] for r in recs if r["event"] == "output"]


def status(run: RunCli, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run("status", name, "--json").stdout)
    return result


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under `root`, with its content hash and mode."""
    digest = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            digest[key] = f"-> {path.readlink()}"
        elif path.is_file():
            data = hashlib.sha256(path.read_bytes()).hexdigest()
            digest[key] = f"{data} {path.stat().st_mode:o}"
        else:
            digest[key] = f"dir {path.stat().st_mode:o}"
    return digest


def only_env(settings: RunnerSettings) -> Path:
    (env,) = (settings.cache_dir / "envs").iterdir()
    return env


@needs_bwrap
def test_a_job_cannot_change_its_env(runner_cli: RunCli, settings: RunnerSettings) -> None:
    write_env = str(JOBS / "write_env.py")
    runner_cli("envs", "create", "--with", "tiny-pkg")
    env = only_env(settings)
    before = tree_digest(env)
    assert any("tiny_pkg" in path for path in before)

    proc = runner_cli(
        "train", "--name", "vandal", "--with", "tiny-pkg", write_env, "env", check=False
    )
    assert proc.returncode == 1
    assert "Read-only file system" in "\n".join(output(records(runner_cli, "vandal")))
    assert status(runner_cli, "vandal")["status"] == "Failed"
    assert tree_digest(env) == before

    # its own directory and a private /tmp stay writable
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="host-") as host_file:
        runner_cli("train", "--name", "tidy", "--with", "tiny-pkg", write_env, "own")
    (listing,) = [line for line in output(records(runner_cli, "tidy")) if "tmp holds" in line]
    assert "private.txt" in listing and Path(host_file.name).name not in listing
    assert (JobStore(settings.state_dir).workdir("tidy") / "in-workdir.txt").is_file()
    assert not Path("/tmp/private.txt").exists()

    # the layer can be turned off per job: then the same write lands
    runner_cli(
        "train", "--name", "unboxed", "--no-sandbox-fs", "--with", "tiny-pkg", write_env, "env"
    )
    after = tree_digest(env)
    assert after != before
    assert any(path.endswith("planted.py") for path in after)


def test_caller_secrets_do_not_reach_the_job_in_any_mode(
    runner_cli: RunCli, cli_environ: dict[str, str]
) -> None:
    cli_environ["AWS_SECRET_ACCESS_KEY"] = "hunter2"
    for mode in ("auto", "off"):
        runner_cli(
            "train",
            "--name",
            f"secret-{mode}",
            "--sandbox",
            mode,
            str(JOBS / "report.py"),
            "AWS_SECRET_ACCESS_KEY",
        )
        assert "var <unset>" in output(records(runner_cli, f"secret-{mode}"))


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that accepts connections."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@needs_bwrap
def test_without_network_a_job_reaches_no_other_port(runner_cli: RunCli, listener: int) -> None:
    connect = str(JOBS / "connect.py")
    runner_cli("train", "--name", "online", connect, str(listener))
    assert "connected" in output(records(runner_cli, "online"))

    proc = runner_cli(
        "train", "--name", "offline", "--no-network", connect, str(listener), check=False
    )
    assert proc.returncode == 1
    lines = output(records(runner_cli, "offline"))
    assert "interfaces lo" in lines
    assert any(line.startswith("connect failed: [Errno 111] Connection refused") for line in lines)


def test_memory_limit_fails_the_job_with_a_clear_reason(runner_cli: RunCli) -> None:
    hog = str(JOBS / "hog.py")
    proc = runner_cli("train", "--name", "hog", "--memory", "150M", hog, "1000", check=False)
    assert proc.returncode != 0
    result = status(runner_cli, "hog")
    assert result["status"] == "Failed"
    assert "memory limit of 150.0 MiB exceeded" in result["reason"], result["reason"]
    assert "done" not in output(records(runner_cli, "hog"))
    # under the limit the same job completes
    runner_cli("train", "--name", "small", "--memory", "150M", hog, "50")
    assert "done" in output(records(runner_cli, "small"))


def test_memory_limit_without_a_cgroup_is_an_address_space_limit(
    settings: RunnerSettings, store: JobStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cgroup, "ROOT", tmp_path / "no-cgroups")
    spec = JobSpec.create(
        name="hog",
        entry=ScriptEntry(kind="script", target=str(JOBS / "hog.py"), argv=("1000",)),
        sandbox=SandboxPolicy(memory=300 << 20),
    )
    store.create(spec)
    record = execute(store, "hog", settings)
    assert record.status == "Failed"
    assert record.reason == (
        "node-0 exited with code 1: memory limit of 300.0 MiB exceeded "
        "(MemoryError under the address-space rlimit)"
    )
    assert record.cause == Cause.LIMIT
    recs = list(store.records("hog"))
    limits = next(r for r in recs if r["event"] == "sandbox.limits")
    assert limits["memory"] == "rlimit (address space per process)"
    # and the job says, once, that its memory is not limited as a whole
    (degraded,) = [r for r in recs if r["event"] == "sandbox.degraded"]
    assert any(
        item.startswith("memory limit of the whole node") for item in degraded["not_enforced"]
    )
    assert "no cgroup can be made here" in degraded["cause"]
    assert "delegated to this user" in degraded["fix"]
    assert any("MemoryError" in r.get("line", "") for r in recs)


def test_killing_the_runner_takes_the_job_down(cli_environ: dict[str, str], tmp_path: Path) -> None:
    store = JobStore(Path(cli_environ["RUNNER_STATE_DIR"]))
    runner = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "train", "--name", "orphan", str(JOBS / "sleeper.py")],
        env=cli_environ,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ready() -> bool:
            return store.dir("orphan").joinpath("log.jsonl").exists() and "ready" in [
                r.get("line") for r in store.records("orphan")
            ]

        wait_for(ready, timeout=60)
        tag = store.load("orphan").tag
        job = tagged(tag)
        assert job
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        wait_for(lambda: not any(alive(pid) for pid in job), timeout=10)
        assert tagged(tag) == []
        record = store.load("orphan")
        assert record.status == "Failed" and record.reason == "runner exited"
    finally:
        runner.kill()


def test_strict_mode_without_bubblewrap_refuses_before_anything_runs(
    runner_cli: RunCli, cli_environ: dict[str, str], settings: RunnerSettings
) -> None:
    cli_environ["RUNNER_BWRAP"] = "/nonexistent/bwrap"
    report = str(JOBS / "report.py")
    proc = runner_cli(
        "train", "--sandbox", "strict", "--with", "tiny-pkg", report, "X", check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "sandbox is strict but cannot enforce: filesystem" in proc.stderr
    assert "apt-get install -y bubblewrap" in proc.stderr and "Traceback" not in proc.stderr
    assert JobStore(settings.state_dir).jobs() == []
    assert not (settings.cache_dir / "envs").exists() or not any(
        (settings.cache_dir / "envs").iterdir()
    )

    # auto runs, and says once what it does not enforce
    runner_cli("train", "--name", "weak", report, "X")
    degraded = [r for r in records(runner_cli, "weak") if r["event"] == "sandbox.degraded"]
    assert len(degraded) == 1 and degraded[0]["level"] == "warning"
    assert any(layer.startswith("filesystem") for layer in degraded[0]["not_enforced"])


def test_process_limit_fails_the_job_with_a_clear_reason(runner_cli: RunCli) -> None:
    spawner = str(JOBS / "spawner.py")
    proc = runner_cli("train", "--name", "forky", "--processes", "10", spawner, "30", check=False)
    assert proc.returncode == 1
    result = status(runner_cli, "forky")
    assert result["status"] == "Failed"
    # a cgroup's count where one can be made (root here), else the per-user rlimit's refusal
    assert result["reason"].startswith("node-0 exited with code 1: process limit of 10 reached")
    assert "Resource temporarily unavailable" in "\n".join(output(records(runner_cli, "forky")))
    runner_cli("train", "--name", "few", "--processes", "10", spawner, "3")


def test_a_bubblewrap_that_cannot_run_here_degrades_auto_and_refuses_strict(
    runner_cli: RunCli, cli_environ: dict[str, str], tmp_path: Path
) -> None:
    """Where user namespaces are disabled, bwrap exists and fails at once: say so, up front."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    cli_environ["RUNNER_BWRAP"] = str(fake)
    report = str(JOBS / "report.py")
    proc = runner_cli("train", "--sandbox", "strict", report, "X", check=False)
    assert proc.returncode == 1
    assert "bubblewrap cannot run here: bwrap: setting up uid map: Permission denied" in proc.stderr
    runner_cli("train", "--name", "fallback", report, "X")
    recs = records(runner_cli, "fallback")
    (degraded,) = [r for r in recs if r["event"] == "sandbox.degraded"]
    assert "setting up uid map" in degraded["cause"]
    assert status(runner_cli, "fallback")["status"] == "Complete"


@pytest.mark.parametrize("how", ["cancel", "timeout"])
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_cancel_grace_lets_a_job_save_its_checkpoint(
    runner_cli: RunCli, cli_environ: dict[str, str], store: JobStore, how: str, mode: str
) -> None:
    cli_environ["RUNNER_CANCEL_GRACE"] = "5"
    job = str(JOBS / "checkpoint_on_term.py")
    name = f"ckpt-{how}-{mode}"
    if how == "cancel":
        runner_cli("train", "--detach", "--name", name, "--sandbox", mode, job)
        wait_for(lambda: "ready" in output(list(store.records(name))), timeout=60)
        runner_cli("cancel", name)
        expected = "cancelled"
    else:
        runner_cli("train", "--name", name, "--sandbox", mode, "--timeout", "3", job, check=False)
        expected = "timed out after 3 s"
    wait_for(lambda: store.load(name).done, timeout=30)
    assert store.load(name).reason == expected
    assert (store.workdir(name) / "checkpoint.txt").read_text() == "saved"


def test_a_limit_is_named_only_when_the_kernel_says_it_was_hit(
    runner_cli: RunCli, tmp_path: Path
) -> None:
    liar = tmp_path / "liar.py"
    liar.write_text("print('MemoryError: not really')\nraise SystemExit(1)\n")
    runner_cli("train", "--name", "liar", "--memory", "1G", str(liar), check=False)
    assert status(runner_cli, "liar")["reason"] == "node-0 exited with code 1"
    killed = tmp_path / "killed.py"
    killed.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    runner_cli(
        "train", "--name", "killed", "--memory", "1G", "--cpu-time", "60", str(killed), check=False
    )
    # SIGKILL, seen through bubblewrap's init as 128 + 9: no limit said so, so none is named
    assert status(runner_cli, "killed")["reason"] in {
        "node-0 exited with code -9",
        "node-0 exited with code 137",
    }


def test_a_node_that_cannot_enter_its_cgroup_does_not_run() -> None:
    proc = subprocess.run(
        ["sh", "-c", cgroup.ENTER, "sh", "/nonexistent/cgroup.procs", "--", "echo", "ran"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == cgroup.ENTER_FAILED
    assert "ran" not in proc.stdout
    assert "cannot enter the cgroup /nonexistent/cgroup.procs" in proc.stderr


def test_strict_refuses_a_limit_no_cgroup_can_hold(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from runner.sandbox import SandboxUnavailableError, check

    monkeypatch.setattr(cgroup, "ROOT", tmp_path / "no-cgroups")
    bwrap = RunnerSettings().bwrap
    with pytest.raises(SandboxUnavailableError, match="memory limit of the whole node"):
        check(SandboxPolicy(mode="strict", memory=1 << 30), bwrap)
    with pytest.raises(SandboxUnavailableError, match="process limit of the whole node"):
        check(SandboxPolicy(mode="strict", processes=10), bwrap)
    assert any(
        gap.layer.startswith("memory limit") for gap in check(SandboxPolicy(memory=1 << 30), bwrap)
    )
    # the fix is the one for cgroups, not for bubblewrap (which works here)
    with pytest.raises(SandboxUnavailableError) as refused:
        check(SandboxPolicy(mode="strict", memory=1 << 30), bwrap)
    assert "delegated to this user" in str(refused.value)
    assert BWRAP is False or "install bubblewrap" not in str(refused.value)


@pytest.mark.skipif(not cgroup.available("memory"), reason="no writable memory cgroup here")
def test_stale_cgroups_of_a_live_runner_are_kept(tmp_path: Path) -> None:
    parent = cgroup._own_path("memory")
    assert parent is not None
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = parent / f"{cgroup.PREFIX}{sleeper.pid}.{start_ticks(sleeper.pid)}-job-0"
        dead = parent / f"{cgroup.PREFIX}999999999.1-job-0"
        for path in (live, dead):
            path.mkdir()
        old = time.time() - 2 * cgroup.STALE_AFTER
        with contextlib.suppress(OSError):  # cgroupfs may refuse utime; then wait for age
            for path in (live, dead):
                os.utime(path, (old, old))
        if time.time() - live.stat().st_mtime <= cgroup.STALE_AFTER:
            pytest.skip("cgroupfs does not take utime here")
        cgroup._remove_stale(parent)
        assert live.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        for path in parent.glob(f"{cgroup.PREFIX}*-job-0"):
            path.rmdir()


@needs_bwrap
def test_a_job_cannot_forge_its_record_nor_reach_another_job(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    """Records kept outside /tmp, as a user's are (~/.local/state): the private /tmp hides
    nothing of them, so what keeps them from the job is the sandbox's own layer."""
    home = Path(tempfile.mkdtemp(prefix="runner-home-", dir="/var/tmp"))
    home.chmod(0o755)  # as a home is: root's jobs run as a user of their own, who reads it
    state = home / ".local" / "state"
    # the script sits in a folder that holds the records too, as ~/forger.py would
    shutil.copy(JOBS / "forger.py", home / "forger.py")
    try:
        run = cli_runner({**cli_environ, "RUNNER_STATE_DIR": str(state)}, tmp_path)
        store = JobStore(state)
        victim = run("train", "--detach", str(JOBS / "sleeper.py")).stdout.strip()
        wait_for(lambda: "ready" in output(list(store.records(victim))), timeout=60)
        run("train", "--name", "forger", str(home / "forger.py"), victim)
        lines = output(records(run, "forger"))
        attempts = json.loads(lines[0])
        assert attempts.pop("work") == "done"  # its working folder is its own
        assert all(result.startswith("refused") for result in attempts.values()), attempts
        assert lines[1] == "visible forger"  # no other job's folder, not even its name
        # and the runner's view is the truth
        assert status(run, "forger")["status"] == "Complete"
        assert status(run, victim)["status"] == "Running"
        assert "forged" not in store.log_path("forger").read_text()
        assert not store.cancel_path("forger").exists()
        assert not store.cancel_path(victim).exists()
    finally:
        for record in JobStore(state).jobs():  # nothing of the test outlives it
            end_tree(record.tag, 0)
        shutil.rmtree(home, ignore_errors=True)


def test_a_script_under_tmp_imports_the_module_beside_it(
    runner_cli: RunCli, tmp_path: Path
) -> None:
    project = tmp_path / "project"  # under /tmp, which the sandbox replaces with its own
    project.mkdir()
    (project / "model.py").write_text("NAME = 'the model beside the script'\n")
    (project / "train.py").write_text("import model\nprint(model.NAME)\n")
    runner_cli("train", "--name", "sibling", str(project / "train.py"))
    assert output(records(runner_cli, "sibling")) == ["the model beside the script"]
