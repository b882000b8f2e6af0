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

from benchmarks.run import headline, markdown, targets

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MEASURED = ("envs", "runner", "benchmarks", ":!benchmarks/results")
"""What the benchmark measures: a change there makes the report stale."""
TRAILER = "Benchmark"
"""A commit that changes what the report measures without moving it says so, and why, in
its message: a last paragraph line `Benchmark: unaffected, <why>`."""


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


def test_readme_and_the_docs_show_the_report() -> None:
    report = json.loads((RESULTS / "report.json").read_text())
    report["targets"] = targets(report)
    whole = (RESULTS / "report.md").read_text()
    assert markdown(report) == whole, "report.md is not the report's: rerun python -m benchmarks"
    summary = (RESULTS / "summary.md").read_text()
    assert headline(report) == summary, "summary.md is not the report's"
    assert len(summary.splitlines()) >= 5 and all(row in whole for row in summary.splitlines())
    readme = (ROOT / "README.md").read_text()
    assert summary in readme, "README's Performance table differs from benchmarks/results"
    page = (ROOT / "docs" / "performance.md").read_text()
    assert '--8<-- "benchmarks/results/report.md"' in page  # the whole report, included


def test_the_report_measured_the_code_that_is_here() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the report's commit cannot be compared")
    code = json.loads((RESULTS / "report.json").read_text())["code"]
    assert code["dirty"] == [], f"the report measured uncommitted changes: {code['dirty']}"
    if _git("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.skip("a shallow clone: the commits since the report's cannot all be read")
    log = _git(
        "log",
        f"--format=%H %(trailers:key={TRAILER},valueonly,separator=%x20)",
        f"{code['commit']}..HEAD",
        "--",
        *MEASURED,
    )
    later = [
        line.split()[0]
        for line in log.splitlines()
        if line.strip() and not _unaffected(line.partition(" ")[2])
    ]
    assert later == [], (
        f"{len(later)} commit(s) changed envs/, runner/ or benchmarks/ after the report's "
        f"{code['commit'][:12]}: rerun `python -m benchmarks`, or say in the commit's message "
        f"why the report stays true (a last line `{TRAILER}: unaffected, <why>`): "
        + ", ".join(c[:12] for c in later)
    )


def _unaffected(trailer: str) -> bool:
    """A trailer that says the commit leaves the report true, and why."""
    verdict, _, why = trailer.strip().partition(",")
    return verdict.strip().lower() == "unaffected" and bool(why.strip())


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def test_bad_arguments_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--reps", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--reps must be at least 1" in proc.stderr
