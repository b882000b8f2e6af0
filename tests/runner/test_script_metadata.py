"""A script that declares its packages (PEP 723) runs with them, as under `uv run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.settings import RunnerSettings
from runner.store import JobStore
from tests.conftest import UvSpy
from tests.runner.conftest import RunCli

SCRIPT = """\
# /// script
# requires-python = "{python}"
# dependencies = [{deps}]
# ///
from importlib.metadata import version

print("tiny-pkg", version("tiny-pkg"), "dep-a", version("dep-a"))
"""


def write(path: Path, deps: str = '"tiny-pkg"', python: str = ">=3.11") -> Path:
    path.write_text(SCRIPT.format(deps=deps, python=python))
    return path


def status(run: RunCli, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run("status", name, "--json").stdout)
    return result


def test_a_script_runs_with_what_it_declares_and_shares_the_env_of_that_set(
    runner_cli: RunCli, tmp_path: Path, settings: RunnerSettings
) -> None:
    script = write(tmp_path / "train.py")
    out = runner_cli("train", "--name", "declared", str(script))
    assert "tiny-pkg 1.0 dep-a 2.0" in out.stdout
    # the same set given on the command line is the same env: the key is the set's
    plain = tmp_path / "plain.py"
    plain.write_text("print('plain')\n")
    runner_cli("train", "--name", "given", "--with", "Tiny_Pkg", str(plain))
    store = JobStore(settings.state_dir)
    assert store.load("declared").env_key == store.load("given").env_key
    # a package named on the command line replaces the script's
    out = runner_cli("train", "--with", "tiny-pkg==0.5", str(script))
    assert "tiny-pkg 0.5 dep-a 1.0" in out.stdout


def test_a_script_this_machine_cannot_serve_is_refused_before_any_job_exists(
    runner_cli: RunCli, tmp_path: Path
) -> None:
    for script, said in [
        (write(tmp_path / "new.py", python=">=4"), "requires Python >=4"),
        (write(tmp_path / "bad.py", deps='"tiny-pkg>=>1"'), "invalid requirement"),
    ]:
        proc = runner_cli("train", str(script), check=False)
        assert proc.returncode != 0
        (line,) = proc.stderr.strip().splitlines()
        assert said in line and str(script) in line
    assert json.loads(runner_cli("jobs", "--json").stdout) == []


def test_a_scripts_lock_runs_it_without_resolving_and_must_hold_what_it_declares(
    runner_cli: RunCli, tmp_path: Path, uv_spy: UvSpy
) -> None:
    script = write(tmp_path / "train.py", deps='"tiny-pkg<1"')
    lockfile = tmp_path / "pylock.toml"
    runner_cli("lock", "--script", str(script), "-o", str(lockfile))
    resolutions = len(uv_spy.calls("pip compile"))
    out = runner_cli("train", "--lockfile", str(lockfile), str(script))
    assert "tiny-pkg 0.5 dep-a 1.0" in out.stdout
    assert len(uv_spy.calls("pip compile")) == resolutions
    write(script, deps='"tiny-pkg<1", "other-pkg"')  # the script changed; its lock did not
    proc = runner_cli("train", "--lockfile", str(lockfile), str(script), check=False)
    assert proc.returncode != 0
    assert "'other-pkg'" in proc.stderr and "does not lock it" in proc.stderr
    assert len(json.loads(runner_cli("jobs", "--json").stdout)) == 1
