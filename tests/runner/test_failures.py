"""Failure paths: every way a job can end is one true final state, and readers change nothing."""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from runner import job as job_module
from runner import steps
from runner.errors import InvalidJobError, LogMissingError
from runner.job import execute
from runner.outcome import Cause
from runner.process import TAG
from runner.settings import RunnerSettings
from runner.spec import JobSpec, ScriptEntry
from runner.store import JobStore, ProcessRef
from tests.conftest import UvSpy
from tests.procs import processes
from tests.runner.conftest import JOBS, RunCli, background, cli_runner
from tests.runner.test_process import alive, wait_for

REPORT = str(JOBS / "report.py")


def log_records(store: JobStore, name: str) -> list[dict[str, Any]]:
    return list(store.records(name))


@pytest.mark.parametrize(("module", "where"), [(steps, "confine"), (job_module, "open_cache")])
def test_an_unexpected_error_fails_the_job_and_names_it(
    settings: RunnerSettings,
    store: JobStore,
    monkeypatch: pytest.MonkeyPatch,
    module: ModuleType,
    where: str,
) -> None:
    """A fault of the runner itself, while steps start (`confine`) or before (`open_cache`)."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("sandbox exploded")

    monkeypatch.setattr(module, where, broken)
    store.create(JobSpec.create(name="boom", entry=ScriptEntry(kind="script", target=REPORT)))
    record = execute(store, "boom", settings)
    assert record.status == "Failed"
    assert record.reason == "runner error: RuntimeError: sandbox exploded"
    assert record.cause == Cause.RUNNER_ERROR
    assert record.exit_code is None
    recs = log_records(store, "boom")
    (error,) = [r for r in recs if r["event"] == "job.error"]
    assert error["error"] == "RuntimeError: sandbox exploded" and "Traceback" in error["exception"]
    assert recs[-1]["event"] == "job.end" and recs[-1]["status"] == "Failed"


def test_a_final_status_is_final(store: JobStore) -> None:
    store.create(JobSpec.create(name="fin", entry=ScriptEntry(kind="script", target=REPORT)))
    assert store.advance("fin", "Complete") is None  # never Complete without having run
    assert store.advance("fin", "Failed", reason="cancelled") is not None
    assert store.advance("fin", "Running") is None
    assert store.advance("fin", "Complete") is None
    assert store.load("fin").status == "Failed" and store.load("fin").reason == "cancelled"


def _orphan(store: JobStore, name: str, owner: ProcessRef) -> subprocess.Popen[bytes]:
    """A Running job whose owner is `owner`, with one process of its own still running."""
    record = store.create(
        JobSpec.create(name=name, entry=ScriptEntry(kind="script", target=REPORT))
    )
    store.advance(name, "Running", owner=owner)
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], env={**os.environ, TAG: record.tag}
    )


def _dead_owner() -> ProcessRef:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    ref = ProcessRef.of(gone.pid, job_module.start_ticks(gone.pid))
    gone.wait()
    return ref


def test_reading_an_ownerless_job_kills_nothing_and_writes_nothing(
    store: JobStore, runner_cli: RunCli
) -> None:
    leftover = _orphan(store, "lost", _dead_owner())
    try:
        before = (store.dir("lost") / "job.json").read_bytes()
        assert store.load("lost").status == "Failed"  # what a reader sees...
        assert store.load("lost").reason == "runner exited"
        assert json.loads(runner_cli("status", "lost", "--json").stdout)["status"] == "Failed"
        runner_cli("jobs")
        runner_cli("logs", "lost")
        assert (store.dir("lost") / "job.json").read_bytes() == before  # ...but nothing changed
        assert leftover.poll() is None
        # reaping is the one explicit step, and doing it twice is doing it once
        runner_cli("jobs", "--reap")
        reaped = json.loads((store.dir("lost") / "job.json").read_bytes())
        assert reaped["status"] == "Failed" and reaped["reason"] == "runner exited"
        assert leftover.wait(timeout=10) is not None
        runner_cli("jobs", "--reap")
        assert json.loads((store.dir("lost") / "job.json").read_bytes()) == reaped
    finally:
        leftover.kill()
        leftover.wait()


def test_an_owner_in_another_pid_namespace_is_not_declared_dead(store: JobStore) -> None:
    elsewhere = _dead_owner().model_copy(update={"host": "pid:[4026531999]@another-boot"})
    leftover = _orphan(store, "remote", elsewhere)
    try:
        assert store.load("remote").status == "Running"
        assert store.reap("remote", 0.5).status == "Running"
        assert leftover.poll() is None
    finally:
        leftover.kill()
        leftover.wait()


def test_a_job_cancelled_while_its_env_builds_never_starts(
    cli_environ: dict[str, str], runner_cli: RunCli, store: JobStore, uv_spy: UvSpy, tmp_path: Path
) -> None:
    uv_spy.hang_after("pip sync", seconds=4)
    marker = tmp_path / "marker.py"
    marker.write_text("open('started', 'w').write('yes')\nprint('started')\n")
    owner = background(
        cli_environ, tmp_path, "train", "--name", "early", "--with", "tiny-pkg", str(marker)
    )
    try:
        wait_for(lambda: bool(uv_spy.calls("pip sync")), timeout=60)
        cancelled = time.monotonic()
        assert "early: Failed (cancelled)" in runner_cli("cancel", "early").stdout
        assert time.monotonic() - cancelled < 3  # not after the build: at once
        seen = set()
        while owner.poll() is None:
            seen.add(store.load("early").status)
            time.sleep(0.02)
        assert seen == {"Failed"}, seen  # never Running again
        assert owner.returncode == 130
    finally:
        owner.kill()
        owner.wait()
    record = store.load("early")
    assert record.status == "Failed" and record.reason == "cancelled"
    events = [r["event"] for r in log_records(store, "early")]
    assert "job.start" not in events and "job.not_started" in events
    assert not (store.workdir("early") / "started").exists()


def test_a_corrupt_record_is_named_and_the_others_are_listed(
    runner_cli: RunCli, store: JobStore, settings: RunnerSettings
) -> None:
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    runner_cli("train", "--name", "good", REPORT, "X")
    runner_cli("train", "--name", "broken", REPORT, "X")
    path = store.dir("broken") / "job.json"
    path.write_bytes(path.read_bytes()[:40])

    listed = runner_cli("jobs")
    assert "good" in listed.stdout and "broken" not in listed.stdout
    assert "job 'broken'" in listed.stderr and "unreadable" in listed.stderr
    assert [r["name"] for r in json.loads(runner_cli("jobs", "--json").stdout)] == ["good"]
    for command in (["status", "broken"], ["logs", "broken"], ["cancel", "broken"]):
        proc = runner_cli(*command, check=False)
        assert proc.returncode == 1, command
        assert "job 'broken'" in proc.stderr and "runner rm broken" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    config = LocalProcessBackendConfig(**settings.model_dump())
    assert [j.name for j in LocalProcessBackend(config).list_jobs()] == ["good"]
    assert "deleted broken" in runner_cli("rm", "broken").stdout
    assert not store.dir("broken").exists()


@pytest.mark.parametrize("damage", ["a-folder", "a-loop", "mode-000", "folder-000"])
def test_a_record_that_cannot_be_opened_is_named_and_the_others_are_listed(
    runner_cli: RunCli, store: JobStore, settings: RunnerSettings, damage: str
) -> None:
    """EISDIR, ELOOP, EACCES: named in one line as the truncated record is, never a traceback."""
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    if damage.endswith("000") and os.geteuid() == 0:
        pytest.skip("root reads a file of mode 000; `.ci/run` runs this as an ordinary user")
    runner_cli("train", "--name", "good", REPORT, "X")
    runner_cli("train", "--name", "broken", REPORT, "X")
    path = store.dir("broken") / "job.json"
    if damage == "a-folder":
        path.unlink()
        path.mkdir()
    elif damage == "a-loop":
        path.unlink()
        path.symlink_to(path)
    elif damage == "mode-000":
        path.chmod(0)
    else:
        store.dir("broken").chmod(0)
    try:
        listed = runner_cli("jobs")
        assert "good" in listed.stdout and "broken" not in listed.stdout
        assert "job 'broken'" in listed.stderr and "unreadable" in listed.stderr
        assert "Traceback" not in listed.stderr
        for command in (["status", "broken"], ["logs", "broken"], ["cancel", "broken"]):
            proc = runner_cli(*command, check=False)
            assert proc.returncode == 1, command
            assert "job 'broken'" in proc.stderr and "cannot be opened" in proc.stderr
            assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        config = LocalProcessBackendConfig(**settings.model_dump())
        assert [j.name for j in LocalProcessBackend(config).list_jobs()] == ["good"]
    finally:
        store.dir("broken").chmod(0o700)
    assert "deleted broken" in runner_cli("rm", "broken").stdout
    assert not store.dir("broken").exists()


def test_another_users_state_or_cache_is_refused_in_one_line(
    runner_cli: RunCli, cli_environ: dict[str, str], tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every user's folders; `.ci/run` runs this as an ordinary user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    (theirs / "jobs").mkdir(mode=0o700)
    theirs.chmod(0o100)  # as another user's 0700 folder is to this one: no listing, no reading
    try:
        uses = {
            "RUNNER_STATE_DIR": (["jobs"], ["status", "x"], ["train", REPORT]),
            "RUNNER_CACHE_DIR": (["envs", "list"], ["train", REPORT]),
        }
        for variable, commands in uses.items():
            run = cli_runner({**cli_environ, variable: str(theirs)}, tmp_path)
            for command in commands:
                proc = run(*command, check=False)
                assert proc.returncode != 0 and "Traceback" not in proc.stderr, (command, proc)
                assert "Permission denied" in proc.stderr or "not readable" in proc.stderr
    finally:
        theirs.chmod(0o700)


def test_a_deleted_log_is_said_plainly_and_one_deleted_while_running_comes_back(
    runner_cli: RunCli, store: JobStore, tmp_path: Path, settings: RunnerSettings
) -> None:
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    runner_cli("train", "--name", "done", REPORT, "X")
    store.log_path("done").unlink()
    for args in (["logs", "done"], ["logs", "done", "--json"], ["logs", "-f", "done"]):
        proc = runner_cli(*args, check=False)
        assert proc.returncode == 1 and "job 'done' has no log" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    backend = LocalProcessBackend(LocalProcessBackendConfig(**settings.model_dump()))
    with pytest.raises(LogMissingError, match="job 'done' has no log"):
        list(backend.get_job_logs("done"))
    with pytest.raises(LogMissingError, match="job 'done' has no log"):
        backend.get_job_events("done")

    slow = tmp_path / "slow.py"
    slow.write_text(
        "import os, time\nprint('before', flush=True)\n"
        "while os.path.exists('../log.jsonl'):\n    time.sleep(0.05)\nprint('after')\n"
    )
    name = runner_cli("train", "--detach", "--sandbox", "off", str(slow)).stdout.strip()
    wait_for(lambda: "before" in [r.get("line") for r in store.records(name)], timeout=60)
    store.log_path(name).unlink()
    wait_for(lambda: store.load(name).done, timeout=60)
    wait_for(lambda: store.log_path(name).exists(), timeout=10)
    assert store.load(name).status == "Complete"
    recs = log_records(store, name)
    assert [r["line"] for r in recs if r["event"] == "output"] == ["before", "after"]
    assert "log.restored" in [r["event"] for r in recs]


def _shell(environ: dict[str, str], cwd: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A command line as a user types it in a shell, its output captured."""
    return subprocess.run(
        command,
        shell=True,
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_closed_stdout_stops_neither_the_job_nor_its_log(
    cli_environ: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    many = str(JOBS / "many_lines.py")
    proc = _shell(
        cli_environ,
        tmp_path,
        f"{sys.executable} -m runner.cli train --name piped {many} 50000 100 | head -n 1",
    )
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert store.load("piped").status == "Complete"
    lines = [r["line"] for r in store.records("piped") if r["event"] == "output"]
    assert len(lines) == 50_000


def test_a_line_longer_than_a_record_says_it_goes_on(
    runner_cli: RunCli, store: JobStore, tmp_path: Path
) -> None:
    long = tmp_path / "long.py"
    long.write_text("print('x' * (64 * 1024 * 2 + 5))\nprint('next')\n")
    runner_cli("train", "--name", "long", str(long))
    out = [r for r in store.records("long") if r["event"] == "output"]
    assert [len(r["line"]) for r in out] == [65536, 65536, 5, 4]
    assert [r.get("partial", False) for r in out] == [True, True, False, False]


def test_bad_input_that_used_to_get_through_is_refused(
    runner_cli: RunCli, store: JobStore, tmp_path: Path
) -> None:
    cases = [
        (["train", "--name", "", REPORT], "job name '' is invalid"),
        (["train", "--index-url", "not a url", REPORT], "index URL 'not a url' is not a URL"),
        (["train", str(tmp_path)], "is a directory"),
        # a record written with it could not be read back: every reader failed on it
        (["train", "--memory", "0", REPORT], "sandbox.memory: Input should be greater than 0"),
    ]
    for args, message in cases:
        proc = runner_cli(*args, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert store.jobs() == [] and not any(store.root.iterdir())

    valid = JobSpec.create(entry=ScriptEntry(kind="script", target=REPORT))
    past_validation = valid.model_copy(update={"num_nodes": 0})  # what no reader accepts
    with pytest.raises(InvalidJobError, match="num_nodes: Input should be greater than"):
        store.create(past_validation)
    assert not any(store.root.iterdir())  # refused before anything was written


def test_an_unusable_state_or_cache_dir_is_one_line_before_anything_starts(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    from tests.runner.conftest import cli_runner

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for var in ("RUNNER_STATE_DIR", "RUNNER_CACHE_DIR"):
        run = cli_runner({**cli_environ, var: str(not_a_dir)}, tmp_path)
        for args in (["train", REPORT, "X"], ["envs", "list"], ["jobs"], ["lock", "--with", "x"]):
            if var == "RUNNER_STATE_DIR" and args[0] in {"envs", "lock"}:
                continue  # those never read job records
            if var == "RUNNER_CACHE_DIR" and args[0] == "jobs":
                continue
            proc = run(*args, check=False)
            assert proc.returncode == 1, (var, args, proc.stderr)
            assert str(not_a_dir) in proc.stderr and "not a directory" in proc.stderr
            assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_an_unusable_data_cache_is_one_line_before_anything_starts(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    from tests.runner.conftest import cli_runner

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    run = cli_runner({**cli_environ, "RUNNER_DATA_DIR": str(not_a_dir / "data")}, tmp_path)
    proc = run("train", "--name", "no-data", REPORT, "X", check=False)
    assert proc.returncode == 1
    assert f"cannot use the data cache at {not_a_dir / 'data'}" in proc.stderr
    assert "--no-data-cache" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert run("jobs", "--json").stdout.strip() == "[]"  # no job was recorded
    run("train", "--name", "without", "--no-data-cache", REPORT, "X")  # the way out works


def test_the_name_is_printed_and_the_level_applies(
    runner_cli: RunCli, cli_environ: dict[str, str]
) -> None:
    proc = runner_cli("train", "--name", "named", REPORT, "X")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("job named Complete in ") and "`runner logs named`" in last
    assert "Started job named" in proc.stderr
    records = runner_cli("--log-format", "json", "train", "--name", "as-json", REPORT, "X")
    levels = {json.loads(line)["level"] for line in records.stdout.splitlines()}
    assert "debug" not in levels
    cli_environ["RUNNER_LOG_LEVEL"] = "warning"
    quiet = runner_cli("--log-format", "json", "train", "--name", "quiet", REPORT, "X")
    shown = [json.loads(line) for line in quiet.stdout.splitlines()]
    assert {r["event"] for r in shown} == {"output"}  # the job's lines, and no info events
    said = runner_cli("train", "--name", "quiet-text", REPORT, "X").stderr.splitlines()
    assert said == ["to stderr", said[-1]]  # the job's own line, and no event but the end
    assert said[-1].startswith("job quiet-text Complete")


def test_train_options_after_the_script_are_warned_about(runner_cli: RunCli) -> None:
    proc = runner_cli("train", "--name", "late", REPORT, "X", "--with", "numpy")
    assert "warning: --with comes after the script" in proc.stderr
    plain = runner_cli("train", "--name", "plain", REPORT, "X", "--epochs", "3")
    assert "warning" not in plain.stderr


def test_envs_rm_checks_every_key_before_removing_any(runner_cli: RunCli) -> None:
    key = json.loads(runner_cli("envs", "create", "--json").stdout)["key"]
    proc = runner_cli("envs", "rm", key, "no-such-key", check=False)
    assert proc.returncode == 1 and "no-such-key" in proc.stderr
    assert key[:12] in runner_cli("envs", "list").stdout  # nothing removed: all or none
    assert "Traceback" not in proc.stderr


def test_a_damaged_env_is_one_line_everywhere_and_the_next_job_builds_it_again(
    runner_cli: RunCli, store: JobStore, settings: RunnerSettings
) -> None:
    runner_cli("train", "--name", "first", "--with", "tiny-pkg", REPORT, "X")
    key = store.load("first").env_key
    assert key is not None
    meta = settings.cache_dir / "envs" / key / "runner-env.json"
    meta.write_text(meta.read_text()[:50])  # a disk fault, a hand edit

    listed = runner_cli("envs", "list")
    assert key[:12] not in listed.stdout and "0 environment(s)" in listed.stdout
    for proc in (listed, runner_cli("envs", "show", key[:12], check=False)):
        assert proc.stderr.count("\n") == 1 and f"environment {key[:12]} is damaged" in proc.stderr
        assert "Traceback" not in proc.stderr

    runner_cli("train", "--name", "second", "--with", "tiny-pkg", REPORT, "X")
    assert store.load("second").status == "Complete" and store.load("second").env_key == key
    (damaged,) = [r for r in log_records(store, "second") if r["event"] == "env.damaged"]
    assert damaged["level"] == "warning" and damaged["action"] == "rebuild from its lock"
    assert key[:12] in runner_cli("envs", "list").stdout

    meta.unlink()
    assert f"removed {key[:12]}" in runner_cli("envs", "rm", key[:12]).stdout
    assert not meta.parent.exists()


def test_a_job_records_the_index_it_used(runner_cli: RunCli, cli_environ: dict[str, str]) -> None:
    runner_cli("train", "--name", "idx", "--with", "tiny-pkg", REPORT, "X")
    (row,) = json.loads(runner_cli("jobs", "--json").stdout)
    assert row["index"]["find_links"] == cli_environ["RUNNER_FIND_LINKS"].split()
    assert row["index"]["no_index"] is True


def test_lock_takes_the_index_options_as_train_does(runner_cli: RunCli, tmp_path: Path) -> None:
    from tests.wheelhouse import make_wheel

    own = tmp_path / "own-wheels"
    make_wheel(own, "lonely-pkg", "3.1")
    proc = runner_cli("lock", "--with", "lonely-pkg", "--find-links", str(own))
    assert 'name = "lonely-pkg"' in proc.stdout and 'version = "3.1"' in proc.stdout


def _processes_running(path: str) -> list[int]:
    return processes(lambda argv: path.encode() in argv[:2])


def test_a_killed_build_leaves_no_child_and_the_next_build_just_works(
    cli_environ: dict[str, str], runner_cli: RunCli, uv_spy: UvSpy, tmp_path: Path
) -> None:
    uv_spy.hang_after("pip sync", seconds=120)
    builder = background(cli_environ, tmp_path, "envs", "create", "--with", "tiny-pkg")
    try:
        wait_for(lambda: bool(uv_spy.calls("pip sync")), timeout=60)
        children = _processes_running(str(uv_spy.path))
        assert children  # uv (here: the spy around it) is a child of the build
        builder.kill()
        builder.wait()
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)
    finally:
        builder.kill()
        builder.wait()
        for pid in _processes_running(str(uv_spy.path)):
            os.kill(pid, 9)
    uv_spy.hang_after(None)
    again = runner_cli("envs", "create", "--with", "tiny-pkg", "--json", check=False)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    runner_cli("envs", "gc", "--older-than", "365d")
    cache_tmp = Path(cli_environ["RUNNER_CACHE_DIR"]) / "tmp"
    assert list(cache_tmp.iterdir()) == []


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap for a read-only mount")
@pytest.mark.parametrize("var", ["RUNNER_STATE_DIR", "RUNNER_CACHE_DIR"])
def test_a_read_only_state_or_cache_dir_is_one_line_and_no_job(
    cli_environ: dict[str, str], tmp_path: Path, var: str
) -> None:
    """A read-only mount (root writes through permissions, so mount it read-only for real)."""
    folder = Path(cli_environ[var])
    (folder / "jobs").mkdir(parents=True, exist_ok=True)
    for sub in ("envs", "specs", "locks", "leases", "tmp"):
        (folder / sub).mkdir(exist_ok=True)
    ro = ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(folder), str(folder), "--"]
    commands = [["train", "--name", "ro", REPORT, "X"]]
    if var == "RUNNER_CACHE_DIR":
        commands += [["envs", "create", "--with", "tiny-pkg"], ["lock", "--with", "tiny-pkg"]]
    for command in commands:
        proc = subprocess.run(
            [*ro, sys.executable, "-m", "runner.cli", *command],
            env=cli_environ,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert str(folder) in proc.stderr and "not writable (Read-only file system)" in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (Path(cli_environ["RUNNER_STATE_DIR"]) / "jobs" / "ro").exists()


def test_on_a_terminal_the_job_is_named_when_it_starts_and_when_it_ends(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    command = f"{sys.executable} -m runner.cli train --name on-tty {REPORT} X"
    # util-linux `script` gives the runner a terminal
    proc = _shell(
        {**cli_environ, "NO_COLOR": "1"}, tmp_path, f"script -qec {shlex.quote(command)} /dev/null"
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    lines = [line.strip() for line in proc.stdout.splitlines()]
    assert lines.index("Started job on-tty") < lines.index("to stderr")
    assert "job on-tty Complete in " in lines[-1]


def test_an_output_the_terminal_cannot_print_stops_neither_job_nor_log(
    cli_environ: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    accents = tmp_path / "accents.py"
    accents.write_text("for i in range(3):\n    print('h\\u00e9llo', i, flush=True)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "train", "--name", "ascii", str(accents)],
        env={**cli_environ, "PYTHONIOENCODING": "ascii"},  # a stdout that cannot print it
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [r["line"] for r in store.records("ascii") if r["event"] == "output"]
    assert lines == ["h\u00e9llo 0", "h\u00e9llo 1", "h\u00e9llo 2"]


def test_a_job_removed_while_its_env_builds_stays_removed(
    cli_environ: dict[str, str], runner_cli: RunCli, store: JobStore, uv_spy: UvSpy, tmp_path: Path
) -> None:
    uv_spy.hang_after("pip sync", seconds=3)
    argv = ["train", "--name", "gone", "--with", "tiny-pkg", REPORT, "X"]
    owner = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", *argv],
        env=cli_environ,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: bool(uv_spy.calls("pip sync")), timeout=60)
        assert "deleted gone" in runner_cli("rm", "gone").stdout
        _, err = owner.communicate(timeout=60)
    finally:
        owner.kill()
        owner.communicate()
    assert owner.returncode == 1
    *before, last = err.strip().splitlines()
    assert last == "error: no job named 'gone'; `runner jobs` lists the jobs"
    assert [line.split()[0] for line in before] == ["Resolved", "Installed"]  # its build's
    assert not store.dir("gone").exists()  # not brought back by its owner's last writes


def _on_a_full_disk(
    environ: dict[str, str], cwd: Path, size: int, *args: str
) -> subprocess.CompletedProcess[str]:
    """`runner ARGS...` whose every file write past `size` bytes fails (RLIMIT_FSIZE: EFBIG,
    as ENOSPC would be; Python ignores SIGXFSZ), for root and ordinary users alike."""
    return subprocess.run(
        [sys.executable, "-m", "runner.cli", *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size)),
    )


def test_a_log_that_cannot_be_written_stops_the_job_and_says_so_in_one_line(
    runner_cli: RunCli, cli_environ: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    runner_cli("train", "--name", "warm", REPORT, "X")  # its env built without the limit
    spam = tmp_path / "spam.py"
    spam.write_text("import time\nfor i in range(200000):\n    print('line', i)\nprint('end')\n")
    proc = _on_a_full_disk(cli_environ, tmp_path, 64 * 1024, "train", "--name", "spam", str(spam))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    using, started, line = proc.stderr.splitlines()
    assert using.startswith("Using env ") and started == "Started job spam"
    assert line.startswith("job spam Failed: stopped: its log ") and "File too large" in line
    assert "end" not in proc.stdout.split("\n")[-5:]  # stopped, not run to its end
    record = store.load("spam")  # a small record still fits: the end is recorded
    assert record.status == "Failed" and record.reason and "cannot be written" in record.reason
    assert record.cause == Cause.RECORDS
    assert store.log_path("spam").stat().st_size <= 64 * 1024


def test_a_job_that_cannot_be_recorded_is_refused_and_one_whose_end_cannot_still_goes(
    runner_cli: RunCli, cli_environ: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    refused = _on_a_full_disk(cli_environ, tmp_path, 100, "train", "--name", "new", REPORT, "X")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.splitlines()
    job_json = store.dir("new") / "job.json"
    assert line == f"error: cannot record the job 'new': cannot write {job_json}: File too large"
    assert not store.dir("new").exists()  # nothing half made: the name is free
    runner_cli("train", "--name", "new", REPORT, "X")

    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    runner_cli("train", "--detach", "--name", "live", str(sleeper))
    try:
        wait_for(lambda: "up" in runner_cli("logs", "live").stdout)
        owner = store.load("live").owner
        assert owner is not None
        os.kill(owner.pid, signal.SIGKILL)  # its end is left to record: rm must write it
        wait_for(lambda: not alive(owner.pid))
        gone = _on_a_full_disk(cli_environ, tmp_path, 100, "rm", "live")
        assert gone.returncode == 0 and gone.stdout == "deleted live\n"
        assert gone.stderr.startswith("warning: cannot write ") and "Traceback" not in gone.stderr
        assert not store.dir("live").exists()
    finally:
        runner_cli("rm", "live", check=False)


def test_a_delete_cut_short_leaves_the_job_whole_or_gone_and_a_husk_still_goes(
    runner_cli: RunCli, cli_environ: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    runner_cli("train", "--name", "big", REPORT, "X")
    for i in range(40):  # checkpoints: a delete that takes a while
        folder = store.workdir("big") / f"step-{i}"
        folder.mkdir()
        for j in range(100):
            (folder / f"shard-{j}").write_text("x")
    deleting = background(cli_environ, tmp_path, "rm", "big")
    steps = lambda: len(list(store.root.glob("*/work/step-*")))  # noqa: E731 - the job's or its trash's
    wait_for(lambda: steps() < 40 or deleting.poll() is not None)
    deleting.kill()  # kill -9 in the middle of removing its files
    deleting.wait()
    assert not store.dir("big").exists()  # out of sight at once, never half a job
    listed = runner_cli("jobs")
    assert "big" not in listed.stdout and listed.stderr == ""
    runner_cli("train", "--name", "big", REPORT, "X")  # the name is free
    runner_cli("rm", "big")
    assert list(store.root.iterdir()) == []  # what the killed delete left went too

    (store.dir("husk") / "work").mkdir(parents=True)  # a create cut short by a crash
    taken = runner_cli("train", "--name", "husk", REPORT, "X", check=False)
    assert taken.returncode == 1 and "runner rm husk" in taken.stderr
    assert runner_cli("rm", "husk").stdout == "deleted husk (it had no record)\n"
    runner_cli("train", "--name", "husk", REPORT, "X")


def test_a_damaged_line_in_a_log_is_named_and_the_lines_after_it_are_read(
    runner_cli: RunCli, store: JobStore, settings: RunnerSettings, tmp_path: Path
) -> None:
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    two = tmp_path / "two.py"
    two.write_text("print('before', flush=True)\nprint('after')\n")
    runner_cli("train", "--name", "two", str(two))
    log = store.log_path("two")
    lines = log.read_bytes().splitlines(keepends=True)
    (cut,) = [i for i, line in enumerate(lines) if b'"line": "before"' in line]
    damage = [b"garbage{\n", b"\xff\xfe not utf-8\n", b"[1, 2]\n", b'{"no": "event"}\n']
    log.write_bytes(b"".join(lines[: cut + 1] + damage + lines[cut + 1 :]))

    text = runner_cli("logs", "two")
    assert text.stdout == "before\nafter\n"  # nothing after the damage is lost
    warnings = text.stderr.splitlines()
    assert len(warnings) == 4 and all(
        " of the log of job 'two' is not a record" in w for w in warnings
    )
    records = [json.loads(line) for line in runner_cli("logs", "two", "--json").stdout.splitlines()]
    assert [r["number"] for r in records if r["event"] == "log.unreadable"] == [
        cut + 2 + i for i in range(4)
    ]
    assert records[-1]["event"] == "job.end" and "Traceback" not in text.stderr
    backend = LocalProcessBackend(LocalProcessBackendConfig(**settings.model_dump()))
    said = list(backend.get_job_logs("two"))
    assert said[0] == "before" and said[-1] == "after" and len(said) == 6
