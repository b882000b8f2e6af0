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
    "54dc40d8f7f05be9dced736e701b123168ff22b5": (
        "runner: the sandbox.limits record built by JobCgroup.held; same fields"
    ),
    "4435d36b90bb67c1c8a842dff812a1e0c4a34a93": (
        "runner/cgroup.py: a systemd scope, on cgroup v2 with limits only; no benchmark sets one"
    ),
    "97293014bf1b0d8d4740825b62db5bc707c14438": (
        "runner/cli/locks.py: the order of lock's checks; no benchmark runs lock"
    ),
    "9490740587d21a3d5271728a11da6e09514e20b9": (
        "envs: one reader for the dependency lists of pyproject.toml and PEP 723 blocks"
    ),
    "54b5bfe0085296f51c28dcb104da88383c0bfda2": (
        "envs/requirements.py: -r reads a pyproject.toml; the benchmark gives no -r"
    ),
    "69ba0e3f02cbb2db063bd85b23793e6ac2ff6463": (
        "runner/cli: the words of two refusals (a script that is not a file, "
        "lock --script's missing file)"
    ),
    "1b45de82313e012c7fcbc43d0f021b15baad5d2f": (
        "envs/script.py: the codec that reads a script's block (utf-8-sig for utf-8)"
    ),
    "b835a432c3811c3eaa28169c9ea3d1b11b385406": (
        "envs/condacache.py: how gc removes a conda package; no benchmark runs gc"
    ),
    "0469e41b787ba58205a8e780c07f5f19a0d65b12": (
        "envs/gc.py, envs/condacache.py, envs/conda.py: gc prunes rattler's package cache "
        "(no benchmark runs gc); a conda install takes one flock, microseconds in a build"
    ),
    "675c1d4668942c8457b0b17aad0cc9af35cee0ce": (
        "runner/cli, envs/script.py: `runner train` reads its script for a PEP 723 block; "
        "11 us without one (timeit) and a 1.6 ms import, in a command of about 250 ms"
    ),
    "57168aff88f2abda2391ebb76aaa33a7239030b9": (
        "envs/formats.py: the memo key is computed only where a memo is used; the pixi.lock "
        "row reads as it did, and pylock reads skip one hash"
    ),
    "2c37cc8fe4e39c601a435c6005ea00e823a4afd2": (
        "runner/process.py: the output pump waits with poll() where it used select(); the "
        "same reads in the same order, for any number of open files"
    ),
    "77431e8243174d1f55db56dcf2b76fd1db3d6a90": (
        "runner/cli/envs.py: the words `envs rm` prints, which no benchmark runs"
    ),
    "d0f4afa5b6f8cd0fdf5efc1825a50829a7335669": (
        "runner/spec.py, runner/store.py, envs/cache.py, envs/gc.py: the wording of a refused "
        "job shared, the removal of an empty damaged env, a class renamed; no measured path "
        "runs them"
    ),
    "88b7e8b23a12fa3665e9c0b52a79289f37b2b79a": (
        "runner/cli, envs/conda.py, envs/formats.py: the lockfile options read by one helper "
        "and one message constant; the same reads and checks as before"
    ),
    "103e67d804b5df1ee48da2e961cd40e93965a482": (
        "envs/builder.py: two arguments made required and a helper inlined; a pip lock's "
        "build does what it did"
    ),
    "d2f0c4a7000e93d2fffc9319810377342412cef5": (
        "envs/formats.py: the readers of lock formats put in one table; each reads as it did"
    ),
    "56539cb86ea9a2e2b29c14f8c9e7fe71233bac08": (
        "envs/conda.py, envs/builder.py: progress events while rattler installs; the "
        "benchmark's pixi.lock row times cache hits, which install nothing"
    ),
    "e479681a67be7dbc6bee5ade4e7b45920b191787": (
        "runner/cli: `envs create --lockfile`, which no benchmark runs, and the lockfile "
        "options of `train` declared once for both (the same options, the same work)"
    ),
    "789eb01c58fc819b74d3f8f531462cb3c1132d98": (
        "benchmarks/chart.py: how the chart is drawn, not what is measured"
    ),
    "445f62374978eca50b2d90e0bbd9f2f8b734c15a": (
        "benchmarks/run.py: the labels of two rows of the README table, not what is measured"
    ),
    "b72e37902f6600690b2c957c2fe8348f9d09116f": (
        "runner/job.py, runner/cgroup.py: a per-line check hoisted to once per job (the "
        "benchmark's jobs print a line or two) and a clean-up loop shared; same behaviour"
    ),
    "8d12f2e25dc6932c8fa3256b5c5f3fdb90b4ced2": (
        "runner/export.py, runner/cli/export.py: an option of `runner export trainjob`, which "
        "no benchmark runs; the CLI imports only click for it at start-up"
    ),
    "3933e487e44c8e87c9a7f3159607c80cc8df626f": (
        "runner/export.py: the wording of `runner export`'s notes, which no benchmark runs"
    ),
    "efad8bea47c867325abcd13249a28d83248fe944": (
        "envs/proc.py, envs/bytecode.py: one getppid() check in each child after fork, "
        "against a race with the parent's death; microseconds in builds of a second or more"
    ),
    "1880347e2095fd912b57de7fade6e31c03e4533a": (
        "benchmarks/run.py: two copies of uv run's environment made one helper; same values"
    ),
    "770cced9c39221a33953c808892744906edacf94": (
        "envs/lockfile.py: pylock 'archive' entries (direct references) are read; the "
        "benchmark's sets have none, so its locks read the same"
    ),
    "1d3d2350152a8649f6bc1433501730d80773e41a": (
        "envs/lockfile.py, envs/formats.py, runner/export.py: direct references marked and "
        "written by URL; the benchmark's sets have none, and it writes no lockfile"
    ),
    "f6abf2aae39f1684b3fe9a8d15b7baa989294692": (
        "envs/pipconfig.py: the same files read once instead of three times per spec; the "
        "report's spec-making figures are, if anything, a little high"
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
