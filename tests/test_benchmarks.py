"""The benchmark script runs end to end (a quick run: numpy only) and writes its report;
README's figures are the report's, and the report measured the code that is here.

No figure is asserted: timings belong in the report and README, not in tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import markdown, targets

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MEASURED = ("envs", "runner", "benchmarks", ":!benchmarks/results")
"""What the benchmark measures: a change there makes the report stale."""
UNMEASURED_CHANGES: dict[str, str] = {
    "49e892bc37fd3ce6d1a1eefdf0e5e8bf9a575892": (
        "NOT measured: uv's install now runs without --quiet, its stderr read line by line for "
        "the progress line; a cold build may move by that (expected: within noise); the CLI's "
        "cache-hit rows import runner.human, no rich unless a build shows progress"
    ),
    "d0051cef4a623a332c6287beafc01f6a722f0ef2": (
        "a review's refactor: the same cgroups and standbys, made by one function"
    ),
    "0228f78a1a1b53df750c38ea7d351e6c634841c6": (
        "NOT measured: this machine's pip configuration names an extra index, so the report's "
        "sets now resolve with unsafe-best-match (both local indexes read) under new keys; the "
        "cold rows may move by that; the next report says by how much"
    ),
    "864f805f80250a9908d576cb0889b62de822c960": (
        "lines printed after a job whose env could not be built; none in the report"
    ),
    "6b9c67938f303143d7594d8d501a509c25915a78": (
        "help's layout: --help formats the same rows click did (each command's short help), grouped"
    ),
    "d251040845904b583df2b17172e44011d4e855ab": (
        "one more condition when the cache looks for a base; no measured set is empty"
    ),
    "b6589fee98ee917af71689da2e9531a67c74e759": (
        "words added to a conda install's error; only a failed install reads them"
    ),
    "e3a7d4eaaae7bf060918031335838a58b7323091": (
        "export of a job whose env was removed; the report times no export"
    ),
    "9f8c4ded4c63deb3d4ca9e6bddde68225662cfc9": (
        "runner config's text; the report times no runner config"
    ),
    "f547d2b0f5771e9db72542115f3bd1127acbe004": (
        "which console renderer a terminal gets; the report's commands are piped"
    ),
    "bf4783a1ee8938247a6f40ac82aaf8a50f23f7ea": (
        "one click option object added per command at import, microseconds of the CLI's start"
    ),
    "1e62469fddbb784f25906edafe9905bfe44c120d": (
        "how errors are printed, and status's step lines: a loop over one or two steps"
    ),
    "a39bd9921485f38ad122444f332c811ab9117ea6": ("words of three refusals"),
    "5fb83e8faf48b648415f94b451522064cbaed7f2": (
        "jobs with a process limit held by an rlimit leave no standby; the report sets no limit"
    ),
}
"""Commits after the report's that change what it measures, each with why it does not matter."""


def test_quick_benchmark_writes_a_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--reps", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    cold = report["results"]["cold_numpy"]
    for side in ("original", "runner"):
        for caches in ("empty", "warm"):
            figure = cold[f"{side}_cache_{caches}"]
            assert figure["runs"] == 1 and figure["median"] > 0
    cli = report["results"]["cli"]
    assert cli["help"]["runs"] == 10 and cli["job_count"] == 100
    assert report["machine"]["cpus"] and report["command"].startswith("python -m benchmarks")
    assert len(report["code"]["commit"]) == 40


def test_readme_shows_the_report_whole() -> None:
    report = json.loads((RESULTS / "report.json").read_text())
    report["targets"] = targets(report)
    summary = (RESULTS / "summary.md").read_text()
    assert markdown(report) == summary, "summary.md is not the report's: rerun python -m benchmarks"
    readme = (ROOT / "README.md").read_text()
    assert summary in readme, "README's Performance tables differ from benchmarks/results"


def test_the_report_measured_the_code_that_is_here() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the report's commit cannot be compared")
    code = json.loads((RESULTS / "report.json").read_text())["code"]
    assert code["dirty"] == [], f"the report measured uncommitted changes: {code['dirty']}"
    log = subprocess.run(
        ["git", "log", "--format=%H", f"{code['commit']}..HEAD", "--", *MEASURED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    later = [c for c in log.stdout.split() if c not in UNMEASURED_CHANGES]
    assert later == [], (
        f"{len(later)} commit(s) changed envs/, runner/ or benchmarks/ after the report's "
        f"{code['commit'][:12]}: rerun `python -m benchmarks` (or name them, with why they do "
        "not matter, in UNMEASURED_CHANGES)"
    )


def test_bad_arguments_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--reps", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--reps must be at least 1" in proc.stderr
