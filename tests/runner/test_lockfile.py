"""Lockfiles for real: `runner lock`, `envs export`, `train --lockfile`, in the three formats."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conda_lock.lockfile import parse_conda_lock_file

from envs import Interpreter, formats
from runner.settings import RunnerSettings
from runner.store import JobStore
from tests.conftest import UvSpy
from tests.runner.conftest import JOBS, RunCli

REPORT = str(JOBS / "report.py")
NAMES = {"pylock": "pylock.toml", "conda-lock": "conda-lock.yml", "requirements": "locked.txt"}
HERE = Interpreter.current()


def status(run: RunCli, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run("status", name, "--json").stdout)
    return result


def installed(env: Path) -> dict[str, str]:
    """Each installed distribution's name and version, and the content of its RECORD."""
    (site,) = env.glob("lib/python*/site-packages")
    return {info.name: (info / "RECORD").read_text() for info in sorted(site.glob("*.dist-info"))}


def job_env(settings: RunnerSettings, name: str) -> Path:
    key = JobStore(settings.state_dir).load(name).env_key
    assert key is not None
    return settings.cache_dir / "envs" / key


@pytest.mark.parametrize("fmt", list(NAMES))
def test_each_format_round_trips_and_runs_a_job_without_resolving(
    runner_cli: RunCli, tmp_path: Path, uv_spy: UvSpy, settings: RunnerSettings, fmt: str
) -> None:
    out = tmp_path / NAMES[fmt]
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(out))
    lock = formats.read(out, HERE)
    assert lock.pins() == ["dep-a==2.0", "tiny-pkg==1.0"]
    resolutions = len(uv_spy.calls("pip compile"))
    runner_cli("train", "--name", "locked", "--lockfile", str(out), REPORT, "X")
    assert status(runner_cli, "locked")["status"] == "Complete"
    assert len(uv_spy.calls("pip compile")) == resolutions  # nothing re-resolved
    env = job_env(settings, "locked")
    assert sorted(installed(env)) == ["dep_a-2.0.dist-info", "tiny_pkg-1.0.dist-info"]
    # the env's own lock, exported in the same format, is the same file
    exported = runner_cli("envs", "export", env.name, "--format", fmt).stdout
    assert exported == out.read_text()


def test_written_lockfiles_are_deterministic(runner_cli: RunCli, tmp_path: Path) -> None:
    for fmt in NAMES:
        first = runner_cli("lock", "--with", "tiny-pkg", "--with", "dep-a", "--format", fmt).stdout
        again = runner_cli("lock", "--with", "DEP_A", "--with", "Tiny.Pkg", "--format", fmt).stdout
        assert first == again and first.strip()
    shutil.rmtree(tmp_path / "cache")  # a fresh resolution writes the same bytes too
    fresh = runner_cli("lock", "--with", "tiny-pkg", "--with", "dep-a", "--format", "pylock")
    assert fresh.stdout == runner_cli("lock", "--with", "dep-a", "--with", "tiny-pkg").stdout


def test_conda_lock_we_write_parses_with_conda_locks_own_parser(
    runner_cli: RunCli, tmp_path: Path
) -> None:
    out = tmp_path / "conda-lock.yml"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(out))
    parsed = parse_conda_lock_file(out)
    assert parsed.metadata.platforms == [formats.conda_platform(HERE)]
    by_name = {p.name: p for p in parsed.package}
    assert sorted(by_name) == ["dep-a", "tiny-pkg"]
    tiny = by_name["tiny-pkg"]
    assert (tiny.manager, tiny.version) == ("pip", "1.0")
    assert tiny.url.endswith("tiny_pkg-1.0-py3-none-any.whl") and len(tiny.hash.sha256 or "") == 64


def test_after_a_cache_wipe_the_lock_rebuilds_the_identical_env(
    runner_cli: RunCli, tmp_path: Path, settings: RunnerSettings
) -> None:
    out = tmp_path / "pylock.toml"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(out))
    runner_cli("train", "--name", "before", "--lockfile", str(out), REPORT, "X")
    before = installed(job_env(settings, "before"))
    shutil.rmtree(settings.cache_dir)
    runner_cli("train", "--name", "after", "--lockfile", str(out), REPORT, "X")
    assert job_env(settings, "after").name == job_env(settings, "before").name
    assert installed(job_env(settings, "after")) == before


@pytest.mark.parametrize("fmt", ["pylock", "requirements"])
def test_a_hash_mismatch_is_refused(
    runner_cli: RunCli, tmp_path: Path, settings: RunnerSettings, fmt: str
) -> None:
    out = tmp_path / NAMES[fmt]
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(out))
    sha = formats.read(out, HERE).packages[1].files[0].sha256
    assert sha is not None
    out.write_text(out.read_text().replace(sha, "0" * 64))
    proc = runner_cli(
        "train", "--name", "tampered", "--lockfile", str(out), REPORT, "X", check=False
    )
    assert proc.returncode == 1
    result = status(runner_cli, "tampered")
    assert result["status"] == "Failed"
    assert "environment not built" in result["reason"] and "hash" in result["reason"].lower()
    assert not any((settings.cache_dir / "envs").iterdir())


def test_a_lock_for_another_python_or_platform_is_refused_naming_both(
    runner_cli: RunCli, tmp_path: Path, settings: RunnerSettings
) -> None:
    here = f"this interpreter is cpython {HERE.version} on {HERE.platform}"
    pylock = tmp_path / "pylock.toml"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(pylock))
    text = pylock.read_text()

    newer = tmp_path / "newer" / "pylock.toml"
    newer.parent.mkdir()
    newer.write_text(re.sub(r"(?m)^requires-python = .*$", 'requires-python = ">=3.99"', text))
    mac = tmp_path / "mac" / "pylock.toml"
    mac.parent.mkdir()
    mac.write_text(text.replace("py3-none-any.whl", "cp311-cp311-macosx_11_0_arm64.whl"))
    conda = tmp_path / "conda-lock.yml"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(conda))
    conda.write_text(conda.read_text().replace(formats.conda_platform(HERE), "osx-arm64"))
    reqs = tmp_path / "locked.txt"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(reqs))
    reqs.write_text(reqs.read_text().replace(HERE.platform, "win-amd64"))

    cases = [
        (newer, "the lock is for Python >=3.99; " + here),
        (mac, "dep-a 2.0 is for another platform (dep_a-2.0-cp311-cp311-macosx_11_0_arm64.whl)"),
        (conda, f"the lock is for osx-arm64; {here} (linux-64)"),
        (reqs, f"the lock is for cpython {HERE.version} on win-amd64; {here}"),
    ]
    for path, message in cases:
        proc = runner_cli("train", "--lockfile", str(path), REPORT, "X", check=False)
        assert proc.returncode == 1, path
        assert message in proc.stderr, (path, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert JobStore(settings.state_dir).jobs() == []


def test_bad_lockfile_input_is_refused_before_anything_runs(
    runner_cli: RunCli, tmp_path: Path, settings: RunnerSettings
) -> None:
    loose = tmp_path / "loose.txt"
    loose.write_text("tiny-pkg>=1\n")
    unhashed = tmp_path / "unhashed.txt"
    unhashed.write_text("tiny-pkg==1.0\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("lock-version = \n")
    binary = tmp_path / "pixi.lock"
    binary.write_bytes(bytes(range(256)) * 8)  # a file that is no text at all
    cases = [
        (["train", "--lockfile", str(binary), REPORT], "is not a text file (not UTF-8)"),
        (["train", "--lockfile", "missing.toml", REPORT], "cannot read lockfile 'missing.toml'"),
        (["train", "--lockfile", str(loose), REPORT], "'tiny-pkg>=1' is not locked"),
        (["train", "--lockfile", str(unhashed), REPORT], "'tiny-pkg==1.0' is not locked"),
        (["train", "--lockfile", str(broken), REPORT], "invalid pylock.toml"),
        (["train", "--lockfile", str(unhashed), "--nproc-per-node", "2", REPORT], "not locked"),
        (["lock"], "give the packages to lock"),
        (["lock", "--with", "tiny-pkg", "--format", "xml"], "'xml' is not one of"),
        (["envs", "export", "nope"], "no cached environment with key 'nope'"),
        (["lock", "--with", "tiny-pkg", "-o", "/no/such/dir/pylock.toml"], "does not exist"),
        (["lock", "--with", "tiny-pkg", "-o", str(tmp_path)], "is a folder: name a file"),
        (["lock", "--with", "tiny-pkg", "-o", "/proc/pylock.toml"], "cannot write /proc/pylock"),
    ]
    for args, message in cases:
        proc = runner_cli(*args, check=False)
        assert proc.returncode != 0, args
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    good = tmp_path / "pylock.toml"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(good))
    proc = runner_cli("train", "--lockfile", str(good), "--with", "dep-a", REPORT, check=False)
    assert "give packages or a lockfile, not both" in proc.stderr
    proc = runner_cli(
        "train", "--lockfile", str(good), "--nproc-per-node", "2", REPORT, check=False
    )
    assert "does not lock torch" in proc.stderr
    assert JobStore(settings.state_dir).jobs() == []
