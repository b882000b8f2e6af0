"""Variables into a job (--env KEY=VALUE, --env NAME, --env-file) and never out of it again:
values reach the job's processes, and no status, listing, log or event shows them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from runner.settings import RunnerSettings
from runner.store import JobStore
from tests.runner.conftest import JOBS, cli_runner
from tests.runner.test_sandbox import output, records

SHOW = str(JOBS / "show_vars.py")


def test_variables_reach_the_job_and_their_values_are_never_shown(
    cli_environ: dict[str, str], settings: RunnerSettings, tmp_path: Path
) -> None:
    env_file = tmp_path / "job.env"
    env_file.write_text(
        "# a dotenv file\nFROM_FILE=file-value-1\nOVERRIDDEN=file-loses\nexport QUOTED='a b'\n"
        "PASSED_IN_FILE\n"
    )
    run = cli_runner(
        {**cli_environ, "HOST_TOKEN": "host-value-2", "PASSED_IN_FILE": "host-value-3"}, tmp_path
    )
    names = ["FROM_FILE", "OVERRIDDEN", "QUOTED", "PASSED_IN_FILE", "HOST_TOKEN", "GIVEN"]
    run(
        "train",
        "--name",
        "vars",
        "--env-file",
        str(env_file),
        "--env",
        "OVERRIDDEN=cli-wins-4",
        "--env",
        "HOST_TOKEN",
        "--env",
        "GIVEN=given-value-5",
        SHOW,
        *names,
    )
    (line,) = output(records(run, "vars"))
    assert json.loads(line) == {
        "FROM_FILE": "file-value-1",
        "OVERRIDDEN": "cli-wins-4",
        "QUOTED": "a b",
        "PASSED_IN_FILE": "host-value-3",
        "HOST_TOKEN": "host-value-2",
        "GIVEN": "given-value-5",
    }
    values = ["file-value-1", "cli-wins-4", "host-value-2", "host-value-3", "given-value-5"]
    shown = {
        "status": run("status", "vars").stdout,
        "status --json": run("status", "vars", "--json").stdout,
        "jobs": run("jobs").stdout,
        "jobs --json": run("jobs", "--json").stdout,
        # the job's events (its own output line aside, which printed them on purpose)
        "events": "\n".join(json.dumps(r) for r in records(run, "vars") if r["event"] != "output"),
    }
    for where, text in shown.items():
        assert not [v for v in values if v in text], where
    assert json.loads(shown["status --json"])["spec"]["env"] == sorted(names)  # names only
    record = JobStore(settings.state_dir).dir("vars") / "job.json"
    assert "host-value-2" in record.read_text()  # kept, to run the job as it was asked
    assert stat.S_IMODE(record.stat().st_mode) == 0o600


def test_a_variable_to_pass_that_is_not_set_or_a_missing_file_is_one_line(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    run = cli_runner({k: v for k, v in cli_environ.items() if k != "NOT_SET_HERE"}, tmp_path)
    typo = tmp_path / "typo.env"
    typo.write_text("A=1\nTOKEN abc\n")  # skipped in silence, the job would run without it
    binary = tmp_path / "binary.env"
    binary.write_bytes(b"\xff\xfeA=1\n")
    for args, said in (
        (["--env", "NOT_SET_HERE"], "'NOT_SET_HERE' is not set in your environment"),
        (["--env-file", str(tmp_path / "missing.env")], "missing.env' does not exist"),
        (["--env-file", str(typo)], "typo.env:2: 'TOKEN abc' is not KEY=VALUE"),
        (["--env-file", str(binary)], "binary.env' unreadable: 'utf-8' codec can't decode"),
        (["-r", str(binary)], "binary.env': 'utf-8' codec can't decode"),
    ):
        proc = run("train", *args, SHOW, "X", check=False)
        assert proc.returncode in (1, 2) and said in proc.stderr, proc.stderr
        assert len([x for x in proc.stderr.splitlines() if x.startswith("error:")]) == 1
        assert "Traceback" not in proc.stderr
    assert run("jobs", "--json").stdout.strip() == "[]"  # nothing was created
