"""Jobs through the real `runner` command: records, statuses, cache reuse, cancel, crashes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runner.outcome import Cause
from runner.process import tagged
from runner.settings import RunnerSettings
from runner.spec import JobSpec, ScriptEntry
from runner.store import JobStore
from tests.conftest import UvSpy
from tests.runner.conftest import JOBS, RunCli, in_the_foreground
from tests.runner.test_process import alive, wait_for

REPORT = str(JOBS / "report.py")


def records(run: RunCli, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run("logs", name, "--json").stdout.splitlines()]


def output(recs: list[dict[str, Any]]) -> list[str]:
    return [r["line"] for r in recs if r["event"] == "output"]


def test_python_job_runs_in_its_own_dir_with_structured_records(
    runner_cli: RunCli, store: JobStore
) -> None:
    proc = runner_cli(
        "--log-format",
        "json",
        "train",
        "--name",
        "first",
        "--with",
        "tiny-pkg",
        "--env",
        "MY_VAR=hello",
        REPORT,
        "MY_VAR",
        "a",
        "b",
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert output(lines) == output(records(runner_cli, "first"))
    recs = records(runner_cli, "first")
    assert f"cwd {store.workdir('first')}" in output(recs)
    assert "var hello" in output(recs) and "args a b" in output(recs)
    out = [r for r in recs if r["event"] == "output"]
    for record in out:
        assert {"timestamp", "level", "event", "job", "step", "stream", "line"} <= set(record)
        assert record["job"] == "first" and record["step"] == "node-0"
    assert {"stdout", "stderr"} == {r["stream"] for r in out}
    events = [r["event"] for r in recs if r["event"] != "output"]
    for event in ("env.resolve", "env.build", "job.start", "job.exit", "job.end"):
        assert event in events
    assert next(r for r in recs if r["event"] == "env.build")["seconds"] > 0
    status = json.loads(runner_cli("status", "first", "--json").stdout)
    assert status["status"] == "Complete" and status["exit_code"] == 0


def test_failing_job_is_failed_with_its_exit_code(runner_cli: RunCli) -> None:
    proc = runner_cli("train", "--name", "bad", "--env", "EXIT_CODE=3", REPORT, "X", check=False)
    assert proc.returncode == 3
    status = json.loads(runner_cli("status", "bad", "--json").stdout)
    assert status["status"] == "Failed" and status["exit_code"] == 3
    assert status["reason"] == "node-0 exited with code 3"
    text = runner_cli("status", "bad").stdout.splitlines()
    assert "steps:     node-0: exited with code 3" in text and "start:     cold" in text
    for step in ("node-1", "nope"):  # a step the job does not have: one line, its steps named
        proc = runner_cli("logs", "bad", "--step", step, check=False)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.splitlines() == [
            f"error: job bad has no step {step!r}; its steps: node-0"
        ]
    assert "to stderr" in runner_cli("logs", "bad", "--step", "node-0").stdout


def test_a_usage_error_says_error_as_every_other_error_does(runner_cli: RunCli) -> None:
    proc = runner_cli("jobs", "--no-such-option", check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == "error: No such option '--no-such-option'."
    assert "Error" not in proc.stderr and "Usage: runner jobs" in proc.stderr


def test_second_job_with_same_set_hits_the_cache_and_runs_no_uv(
    runner_cli: RunCli, uv_spy: UvSpy
) -> None:
    runner_cli("train", "--name", "one", "--with", "tiny-pkg", "--with", "dep-a", REPORT, "X")
    calls = len(uv_spy.calls())
    runner_cli("train", "--name", "two", "--with", "DEP_A", "--with", "Tiny.Pkg", REPORT, "X")
    assert len(uv_spy.calls()) == calls
    events = [r["event"] for r in records(runner_cli, "two")]
    assert "env.hit" in events and "env.build" not in events and "env.resolve" not in events


def test_caller_secrets_do_not_reach_the_job(
    runner_cli: RunCli, cli_environ: dict[str, str]
) -> None:
    cli_environ["AWS_SECRET_ACCESS_KEY"] = "hunter2"
    runner_cli("train", "--name", "secret", REPORT, "AWS_SECRET_ACCESS_KEY")
    assert "var <unset>" in output(records(runner_cli, "secret"))
    runner_cli(
        "train",
        "--name",
        "passed",
        "--env",
        "AWS_SECRET_ACCESS_KEY=given",
        REPORT,
        "AWS_SECRET_ACCESS_KEY",
    )
    assert "var given" in output(records(runner_cli, "passed"))


def test_env_that_cannot_be_built_fails_the_job_with_the_cause(
    runner_cli: RunCli, settings: RunnerSettings
) -> None:
    proc = runner_cli("train", "--name", "nopkg", "--with", "no-such-pkg", REPORT, "X", check=False)
    assert proc.returncode == 1
    status = json.loads(runner_cli("status", "nopkg", "--json").stdout)
    assert status["status"] == "Failed" and "environment not built" in status["reason"]
    failed = [r for r in records(runner_cli, "nopkg") if r["event"] == "env.failed"]
    assert failed and "no-such-pkg" in failed[0]["error"]
    assert list((settings.cache_dir / "envs").iterdir()) == []
    # what uv said, whole, in one block before the last line (not only in `logs --json`)
    told = proc.stderr.splitlines()
    block = [line.strip() for line in failed[0]["error"].splitlines()[1:] if line.strip()]
    shown = [t.strip() for t in told if t.startswith("  ")]  # indented: one block
    assert block and all(line in shown for line in block), proc.stderr
    assert told[-1].startswith("job nopkg Failed: environment not built: ")


def test_bad_input_is_refused_before_anything_is_built(
    runner_cli: RunCli, settings: RunnerSettings
) -> None:
    cases = [
        (["train", "missing.py"], "script 'missing.py' does not exist"),
        (["train", "/dev/null"], "script '/dev/null' is not a file"),
        (["lock", "--script", "missing.py"], "File 'missing.py' does not exist"),
        (["train", "--nproc-per-node", "0", REPORT], "0 is not in the range x>=1"),
        (["train", "--env", "NOEQUALS", REPORT], "'NOEQUALS' is not set in your environment"),
        (["train", "--env", "1X=2", REPORT], "environment variable name '1X' is invalid"),
        (["train", "--name", "Bad_Name", REPORT], "job name 'Bad_Name' is invalid"),
        (["train", "--with", "torch==", REPORT], "'torch=='"),
        (["train", "--nproc-per-node", "2", REPORT], "add a torch requirement"),
        (["train"], "give a SCRIPT to run"),
        (["train", "-m", "not a module"], "module name 'not a module' is not a dotted"),
        (["train", "--no-such-flag", REPORT], "no such option: --no-such-flag"),
    ]
    for args, message in cases:
        proc = runner_cli(*args, check=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (settings.cache_dir / "envs").exists() or not any(
        (settings.cache_dir / "envs").iterdir()
    )
    assert JobStore(settings.state_dir).jobs() == []


def test_a_name_is_used_once(runner_cli: RunCli) -> None:
    runner_cli("train", "--name", "dup", REPORT, "X")
    proc = runner_cli("train", "--name", "dup", REPORT, "X", check=False)
    assert proc.returncode == 1 and "a job named 'dup' already exists" in proc.stderr


def test_200k_lines_keep_runner_memory_bounded_and_lose_nothing(
    cli_environ: dict[str, str], tmp_path: Path, store: JobStore
) -> None:
    probe = (
        "import resource, sys\n"
        "from runner.cli import cli\n"
        "try:\n"
        "    cli(sys.argv[1:], prog_name='runner')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code, file=sys.stderr)\n"
    )

    def peak_kib(name: str, count: int) -> int:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                probe,
                "--log-format",
                "json",
                "train",
                "--name",
                name,
                str(JOBS / "many_lines.py"),
                str(count),
                "200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_environ,
            cwd=tmp_path,
            timeout=300,
            check=False,
        )
        peak, code = proc.stderr.split()[-2:]
        assert code == "0", proc.stderr[-2000:]
        return int(peak)

    small = peak_kib("small", 10)
    big = peak_kib("big", 200_000)
    lines = [r["line"] for r in store.records("big") if r["event"] == "output"]
    assert len(lines) == 200_000
    assert [int(line[:7]) for line in lines] == list(range(200_000))
    # 200k lines of 208 bytes are 40 MiB of output; the runner's peak must not grow with it
    print(f"peak RSS small={small} KiB big={big} KiB")
    assert big - small < 20 * 1024, f"peak RSS grew by {big - small} KiB"


def test_jobs_run_concurrently_in_their_own_directories(
    runner_cli: RunCli, store: JobStore, tmp_path: Path
) -> None:
    writer = tmp_path / "writer.py"
    writer.write_text(
        "import sys, time\n"
        "open('out.txt', 'w').write(sys.argv[1])\n"
        "time.sleep(3)\n"  # long enough for the other to start beside it, under load too
        "print(open('out.txt').read())\n"
    )
    runner_cli("envs", "create")  # the empty env, so both jobs start at once
    names = [runner_cli("train", "--detach", str(writer), tag).stdout.strip() for tag in "AB"]
    for name, tag in zip(names, "AB", strict=True):
        wait_for(lambda n=name: store.load(n).done, timeout=60)
        assert store.load(name).status == "Complete"
        assert output(list(store.records(name))) == [tag]
        assert (store.workdir(name) / "out.txt").read_text() == tag
    first, second = (store.load(n) for n in names)
    assert first.started and second.started and second.finished
    assert first.started < second.finished and second.started < (first.finished or 0)


def _foreground(environ: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[bytes]:
    """`runner train` in the foreground on a job that ignores SIGTERM."""
    return subprocess.Popen(
        in_the_foreground(
            sys.executable,
            "-m",
            "runner.cli",
            "train",
            "--name",
            name,
            str(JOBS / "ignore_term.py"),
        ),
        env=environ,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Whatever happens in the test, the runner it started does not outlive it."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pids_from_logs(store: JobStore, name: str) -> list[int]:
    """Host pids of every process of the job, once it says it is up.

    Found by the job's tag, as the runner finds them: inside the sandbox's pid
    namespace the job's own `os.getpid()` means nothing on the host.
    """

    def up() -> bool:
        if not store.log_path(name).exists():
            return False  # the runner has not created the job yet
        return any(
            r["event"] == "output" and r["line"].startswith("pids ") for r in store.records(name)
        )

    wait_for(up, timeout=60)
    found = tagged(store.load(name).tag)
    assert len(found) >= 2, found  # the job and its child, at least
    return found


def test_cancel_from_another_process_ends_the_whole_tree(
    runner_cli: RunCli, store: JobStore
) -> None:
    name = runner_cli("train", "--detach", str(JOBS / "ignore_term.py")).stdout.strip()
    pids = _pids_from_logs(store, name)
    assert all(alive(p) for p in pids)
    proc = runner_cli("cancel", name)
    assert f"{name}: Failed (cancelled)" in proc.stdout
    wait_for(lambda: not any(alive(p) for p in pids))
    assert "job.cancel" in [r["event"] for r in store.records(name)]


def test_timeout_ends_the_job_as_failed(runner_cli: RunCli, store: JobStore) -> None:
    proc = runner_cli(
        "train", "--name", "slow", "--timeout", "1", str(JOBS / "ignore_term.py"), check=False
    )
    assert proc.returncode == 124
    record = store.load("slow")
    assert record.status == "Failed" and record.reason == "timed out after 1 s"
    assert record.cause == Cause.TIMED_OUT
    wait_for(lambda: tagged(record.tag) == [])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupting_the_foreground_runner_cancels_its_job(
    cli_environ: dict[str, str], store: JobStore, tmp_path: Path, sig: signal.Signals
) -> None:
    runner = _foreground(cli_environ, tmp_path, "fg")
    with _reaped(runner):
        pids = _pids_from_logs(store, "fg")
        runner.send_signal(sig)
        assert runner.wait(timeout=30) == 130
    assert store.load("fg").status == "Failed" and store.load("fg").reason == "cancelled"
    assert store.load("fg").cause == Cause.CANCELLED
    wait_for(lambda: not any(alive(p) for p in pids))


def test_a_job_whose_runner_was_killed_is_failed_not_running_forever(
    cli_environ: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    runner = _foreground(cli_environ, tmp_path, "orphan")
    with _reaped(runner):
        pids = _pids_from_logs(store, "orphan")
    runner.kill()
    runner.wait()
    assert store.load("orphan").status == "Failed"  # as a reader sees it
    record = store.reap("orphan", grace=0.5)  # and as recorded, what it left ended
    assert record.status == "Failed" and record.reason == "runner exited"
    assert record.cause == Cause.RUNNER_EXITED
    wait_for(lambda: not any(alive(p) for p in pids))


def test_logs_follow_streams_until_the_job_ends(
    runner_cli: RunCli, cli_environ: dict[str, str], tmp_path: Path
) -> None:
    ticker = tmp_path / "ticker.py"
    ticker.write_text(
        "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.3)\n"
    )
    name = runner_cli("train", "--detach", str(ticker)).stdout.strip()
    follower = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "logs", "-f", name],
        env=cli_environ,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    first = follower.stdout.readline()
    job_status = json.loads(runner_cli("status", name, "--json").stdout)["status"]
    rest, _ = follower.communicate(timeout=60)
    assert first == "0\n"
    assert job_status == "Running"  # read between the first line and the rest
    assert rest.split() == ["1", "2", "3", "4"]
    assert follower.returncode == 0


def _kib(pattern: str, text: str) -> float:
    """The size in KiB that `pattern`'s group finds in `text` (the test fails if none)."""
    found = re.search(pattern, text)
    assert found, text
    return float(found[1])


def test_rm_older_than_deletes_the_jobs_that_ended_that_long_ago_and_nothing_live(
    runner_cli: RunCli, store: JobStore, tmp_path: Path
) -> None:
    runner_cli("train", "--name", "old-ok", REPORT, "X")
    runner_cli("train", "--name", "old-failed", "--env", "EXIT_CODE=3", REPORT, "X", check=False)
    (store.workdir("old-ok") / "checkpoint.bin").write_bytes(b"x" * 300_000)
    time.sleep(2.5)
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\nprint('up', flush=True)\ntime.sleep(120)\n")
    runner_cli("train", "--detach", "--name", "live", str(sleeper))
    # "new" ends last, right before the deletes: under 3 s old then, on a slow machine too
    runner_cli("train", "--name", "new", REPORT, "X")
    try:
        jobs = {"old-ok", "old-failed", "new", "live"}

        dry = runner_cli("rm", "--older-than", "3s", "--dry-run").stdout
        assert _kib(r"would delete old-ok \(Complete, ([\d.]+) KiB\)", dry) >= 300_000 / 1024
        assert "would delete old-failed (Failed" in dry and "would delete 2 job(s)" in dry
        assert {p.name for p in store.root.iterdir()} == jobs  # nothing deleted

        done = runner_cli("rm", "--older-than", "3s").stdout
        assert _kib(r"deleted 2 job\(s\), ([\d.]+) KiB", done) >= 300_000 / 1024  # checkpoint
        assert {p.name for p in store.root.iterdir()} == {"new", "live"}
        assert "deleted 1 job(s)" in runner_cli("rm", "--older-than", "0s").stdout  # "new"
        assert {p.name for p in store.root.iterdir()} == {"live"}  # running: kept

        # its runner killed: still Running in its record, so kept until reaped
        wait_for(lambda: "up" in runner_cli("logs", "live").stdout)
        owner = store.load("live").owner
        assert owner is not None
        os.kill(owner.pid, signal.SIGKILL)
        wait_for(lambda: not alive(owner.pid))
        assert "deleted 0 job(s)" in runner_cli("rm", "--older-than", "0s").stdout
        runner_cli("jobs", "--reap")
        assert "deleted live (Failed" in runner_cli("rm", "--older-than", "0s").stdout
        assert not store.root.exists() or not any(store.root.iterdir())
    finally:  # never leave the sleeper behind
        runner_cli("rm", "live", check=False)

    for args in ([], ["new", "--older-than", "1d"], ["new", "--dry-run"]):
        refused = runner_cli("rm", *args, check=False)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, args


def test_a_progress_bar_shows_while_it_moves_and_reads_back_as_the_line_it_was(
    runner_cli: RunCli, cli_environ: dict[str, str], settings: RunnerSettings, tmp_path: Path
) -> None:
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    bar = tmp_path / "bar.py"
    bar.write_text(
        "import sys, time\n"
        "sys.stderr.write('\\rstep 1/2'); sys.stderr.flush()\n"
        "time.sleep(2.5)\n"  # an epoch: the bar waits for its end
        "sys.stderr.write('\\rstep 2/2\\n'); sys.stderr.flush()\n"
        "time.sleep(0.5)\n"  # the streams are read apart: keep their order plain
        "print('done')\n"
    )
    runner_cli("train", "--name", "bar", str(bar))
    out = [r for r in records(runner_cli, "bar") if r["event"] == "output"]
    first, second = (r for r in out if r["stream"] == "stderr")
    assert first["line"] == "\rstep 1/2" and first["partial"] is True
    assert second["line"] == "\rstep 2/2" and "partial" not in second
    shown_at = [datetime.fromisoformat(r["timestamp"]) for r in (first, second)]
    assert (shown_at[1] - shown_at[0]).total_seconds() > 1  # shown while the job still ran
    text = subprocess.run(  # bytes: text mode would read each \r as a newline
        [sys.executable, "-m", "runner.cli", "logs", "bar"],
        env=cli_environ,
        capture_output=True,
        check=True,
    ).stdout
    assert text == b"\rstep 1/2\rstep 2/2\ndone\n"
    backend = LocalProcessBackend(LocalProcessBackendConfig(**settings.model_dump()))
    assert list(backend.get_job_logs("bar")) == ["\rstep 1/2\rstep 2/2", "done"]


def test_a_jobs_files_are_its_owners_alone_whatever_the_umask(
    cli_environ: dict[str, str], settings: RunnerSettings, tmp_path: Path
) -> None:
    """As ~/.ssh is: the state dir and each job's folder 0700, its records and logs 0600. A
    second user (as root can make one) reads nothing of them: not the log, not work/."""
    import stat

    from tests.runner.conftest import cli_runner

    loose = cli_runner(cli_environ, tmp_path, "--log-format", "json")
    umask = ["sh", "-c", 'umask 000 && exec "$@"', "-", sys.executable, "-m", "runner.cli"]
    subprocess.run(
        [*umask, "train", "--name", "mine", "--detach", str(JOBS / "report.py"), "X"],
        env=cli_environ,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    store = JobStore(settings.state_dir)
    wait_for(lambda: store.load("mine").done, timeout=60)
    assert loose("status", "mine", "--json").stdout
    modes = {
        path: stat.S_IMODE(path.stat().st_mode)
        for path in (
            settings.state_dir,
            store.root,
            store.dir("mine"),
            store.workdir("mine"),
        )
    }
    assert all(mode == 0o700 for mode in modes.values()), modes
    files = ["job.json", "log.jsonl", "job.lock", "supervisor.log"]
    assert {
        f: stat.S_IMODE((store.dir("mine") / f).stat().st_mode) for f in files
    } == dict.fromkeys(files, 0o600)
    if os.geteuid() == 0:  # a second user, for real
        for target in (
            store.log_path("mine"),
            store.workdir("mine"),
            store.dir("mine") / "job.json",
        ):
            peek = subprocess.run(
                ["runuser", "-u", "nobody", "--", "cat" if target.is_file() else "ls", str(target)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek


def test_exit_codes_derive_from_the_cause_also_of_records_written_before_causes(
    store: JobStore,
) -> None:
    """A record of an older runner (no `cause`) gives the same exit code as a new one."""
    from runner.outcome import exit_code

    store.create(JobSpec.create(name="old", entry=ScriptEntry(kind="script", target=__file__)))
    record = store.load("old")
    cases = [
        ({"status": "Failed", "reason": "cancelled"}, 130),
        ({"status": "Failed", "reason": "timed out after 3 s"}, 124),
        ({"status": "Failed", "reason": "node-0 exited with code 3", "exit_code": 3}, 3),
        ({"status": "Failed", "reason": "node-0 exited with code -9", "exit_code": -9}, 137),
        ({"status": "Complete", "exit_code": 0}, 0),
        ({"status": "Failed", "cause": Cause.CANCELLED, "reason": "stopped by the user"}, 130),
        ({"status": "Failed", "cause": Cause.TIMED_OUT, "exit_code": 1}, 124),
    ]
    for fields, code in cases:
        assert exit_code(record.model_copy(update=fields)) == code, fields


def test_help_groups_trains_options_and_names_each_command_whole(runner_cli: RunCli) -> None:
    shown = runner_cli("train", "--help").stdout
    titles = [line[:-1] for line in shown.splitlines() if line.endswith(":") and line[0] != " "]
    wanted = ["Packages", "Lockfiles and bases", "Ranks and devices", "Sandbox and limits"]
    assert titles == [*wanted, "Job", "Other options"]
    section = shown.split("Sandbox and limits:")[1].split("\n\n")[0]
    assert "--memory" in section and "--no-network" in section and "--with" not in section
    top = runner_cli("--help").stdout
    assert "..." not in top.split("Commands:")[1]  # no sentence cut short
    assert "Delete jobs: their record, log, work folder and HOME, cancelling any" in top


def test_jobs_lists_the_newest_page_first_reading_only_its_records(
    runner_cli: RunCli, settings: RunnerSettings
) -> None:
    store = JobStore(settings.state_dir)
    spec = JobSpec(entry=ScriptEntry(kind="script", target=str(JOBS / "report.py")))
    names = [store.create(spec.model_copy(update={"name": f"job{i:03}"})).name for i in range(45)]
    index = settings.state_dir / "jobs.created"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[5:]) + "\nnot a line\n")  # 5 made by older code; damage
    store.delete("job044")  # removed since: its line stays, its job is gone
    (settings.state_dir / "jobs" / "job010" / "job.json").write_text("{")  # old and corrupt
    listed = runner_cli("jobs")
    rows = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert rows == names[43:23:-1]  # newest first; the removed one is not there
    assert "warning" not in listed.stderr  # the corrupt old record was not read
    assert "the newest 20 of 44 jobs" in listed.stderr
    assert [r["name"] for r in json.loads(runner_cli("jobs", "-n", "3", "--json").stdout)] == [
        "job043",
        "job042",
        "job041",
    ]
    every = runner_cli("jobs", "--all")
    assert len(every.stdout.splitlines()) == 1 + 43 and "job010" in every.stderr  # warned
    assert "the newest" not in every.stderr
    again = index.read_text()
    assert all(f" job00{i}\n" in again for i in (0, 2, 3, 4))  # those older ones: noted once
