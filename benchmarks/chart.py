"""The report as one PNG: four panels of medians (min-max as error bars), log scales."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _bars(ax: Any, title: str, rows: list[tuple[str, dict[str, Any]]], unit: str = "s") -> None:
    labels = [label for label, _ in rows]
    medians = [r["median"] for _, r in rows]
    low = [r["median"] - r["min"] for _, r in rows]
    high = [r["max"] - r["median"] for _, r in rows]
    ours = ("runner", "ours", "our ")
    colors = ["#2b7bb9" if any(o in label for o in ours) else "#b0b0b0" for label in labels]
    ax.barh(labels, medians, xerr=[low, high], color=colors, capsize=3)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter("")  # decades only: minor labels overlap on short ranges
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit)
    for y, value in enumerate(medians):
        ax.text(value, y, f" {value:.3g}", va="center", fontsize=8)


def draw(report: dict[str, Any], path: Path) -> Path | None:
    """Write the chart; None where matplotlib is missing (the JSON report still stands)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    results = report["results"]
    if "second_job" not in results:  # a --quick run: only the numpy cold build
        return None
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    cold, torch = results["cold_numpy"], results["cold_torch_numpy"]
    _bars(
        axes[0][0],
        "A job in a new set (whole process)",
        [
            ("numpy: original, caches empty", cold["original_cache_empty"]),
            ("numpy: runner, caches empty", cold["runner_cache_empty"]),
            ("numpy: original, caches warm", cold["original_cache_warm"]),
            ("numpy: runner, caches warm", cold["runner_cache_warm"]),
            ("torch+numpy: original, caches empty", torch["original_cache_empty"]),
            ("torch+numpy: runner, caches empty", torch["runner_cache_empty"]),
            ("torch+numpy: original, caches warm", torch["original_cache_warm"]),
            ("torch+numpy: runner, caches warm", torch["runner_cache_warm"]),
        ],
    )
    second = results["second_job"]
    _bars(
        axes[0][1],
        "Second job, same set (torch+numpy), whole process",
        [
            ("original (rebuilds)", second["original_rebuild"]),
            ("uv run --with", second["uv_run_with"]),
            ("runner train", second["runner_train"]),
            ("env's python", second["direct"]),
        ],
    )
    sdk, torch_jobs = results["sdk_end_to_end"], results["torch_jobs"]
    _bars(
        axes[1][0],
        "Torch jobs: train() to Complete",
        [
            ("SDK example: original backend", sdk["original"]),
            ("SDK example: ours, first job", sdk["runner_first"]),
            ("SDK example: ours, second job", sdk["runner_second"]),
            ("2 ranks: torchrun from the shell", torch_jobs["torch_2_direct"]),
            ("2 ranks: our SDK backend", torch_jobs["torch_2_sdk"]),
        ],
    )
    shared = results["shared_torch"]
    gib = 2**30
    ax = axes[1][1]
    labels = [
        "one torch env",
        f"{shared['sets']} envs sharing torch",
        f"{shared['sets']} separate envs",
    ]
    values = [
        shared["one_torch_env_bytes"] / gib,
        shared["all_envs_bytes"] / gib,
        shared["sum_of_separate_envs_bytes"] / gib,
    ]
    ax.barh(labels, values, color=["#b0b0b0", "#2b7bb9", "#b0b0b0"])
    ax.set_title("Disk (each inode once)", fontsize=10)
    ax.set_xlabel("GiB")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    machine = report["machine"]
    fig.suptitle(
        f"sandbox-runner vs the original (venv + ensurepip + pip) - {machine['cpus']} CPUs, "
        f"Python {machine['python']}, {report['date']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
