"""Timing and disk helpers: repetitions with median/min/max, and bytes counted per inode."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def stats(seconds: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of some timings, in seconds, with the raw values."""
    return {
        "median": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "runs": len(seconds),
        "values": [round(s, 6) for s in seconds],
    }


def repeat(
    reps: int, fn: Callable[[], Any], setup: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """Time `fn` `reps` times (running `setup` untimed before each)."""
    values = []
    for _ in range(reps):
        if setup:
            setup()
        values.append(timed(fn))
    return stats(values)


def run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; fail loudly with its output (a benchmark of a failure is worthless)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def disk_usage(*roots: Path) -> int:
    """Bytes on disk under `roots`, each inode counted once (hardlinks are shared, not copied)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            for name in files:
                st = os.lstat(os.path.join(folder, name))  # noqa: PTH118 - hot loop
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total
