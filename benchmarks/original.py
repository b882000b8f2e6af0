"""The original backend's way, as Kubeflow's LocalProcessBackend does it for every job.

`python -m venv --without-pip`, `python -m ensurepip --upgrade --default-pip`,
then `pip install` of the packages (pip reads its own configuration, so the
find-links folder with the local torch build is used as it would be there).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.measure import run


def build(target: Path, packages: Sequence[str], pip_cache: Path) -> None:
    """A fresh venv at `target` holding `packages`, the original way, with `pip_cache`."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_CACHE_DIR": str(pip_cache)}
    run([sys.executable, "-m", "venv", "--without-pip", str(target)], env=env)
    python = str(target / "bin" / "python")
    run([python, "-m", "ensurepip", "--upgrade", "--default-pip"], env=env)
    run(
        [python, "-m", "pip", "install", "--quiet", "--no-warn-script-location", *packages], env=env
    )


def build_and_run(root: Path, packages: Sequence[str], script: Path, pip_cache: Path) -> None:
    """One job the original way: a new venv for it, then its script; the venv removed."""
    target = root / "original-venv"
    shutil.rmtree(target, ignore_errors=True)
    try:
        build(target, packages, pip_cache)
        run([str(target / "bin" / "python"), str(script)])
    finally:
        shutil.rmtree(target, ignore_errors=True)
