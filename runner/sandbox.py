"""Isolation policy -> the job's environment (and, later, an argv prefix and rlimits).

The job's environment is built from scratch: a short allowlist from the
caller, then the runner's own variables, then the job's. Secrets in the
caller's environment (tokens, cloud keys) never reach a job by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ALLOWED_FROM_CALLER = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TZ")


def job_environ(
    caller: Mapping[str, str],
    *,
    bin_dir: Path,
    workdir: Path,
    tmpdir: Path,
    job_env: Mapping[str, str],
    torch: bool,
) -> dict[str, str]:
    """The complete environment of a job's processes."""
    env = {k: caller[k] for k in ALLOWED_FROM_CALLER if k in caller}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env["TMPDIR"] = str(tmpdir)
    env["PWD"] = str(workdir)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the runner as they are printed
    env["PYTHONNOUSERSITE"] = "1"  # the env is the whole world: no ~/.local packages
    if torch:
        env["OMP_NUM_THREADS"] = "1"  # torchrun's default; set so it does not warn about it
    env.update(job_env)
    return env
