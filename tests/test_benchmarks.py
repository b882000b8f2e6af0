"""The benchmark script runs end to end (a quick run: numpy only) and writes its report.

No figure is asserted: timings belong in the report and README, not in tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


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
    for contender in ("original", "runner_uv_cache_empty", "runner_uv_cache_warm"):
        assert cold[contender]["runs"] == 1 and cold[contender]["median"] > 0
    assert report["results"]["cli_startup"]["runs"] == 10
    assert report["machine"]["cpus"] and report["command"].startswith("python -m benchmarks")


def test_bad_arguments_are_refused() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--reps", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "--reps must be at least 1" in proc.stderr
