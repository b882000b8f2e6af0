"""Isolation policy -> the job's environment, and an argv prefix that confines it.

Layers, each on by default where the machine supports it:

- environment: an allowlist from the caller plus the job's own variables
  (always on: secrets in the caller's environment never reach a job);
- filesystem: everything read-only (the cached env and the cache included)
  except the job's working folder and its TMPDIR, with a private /tmp; the
  records of every job hidden, its own read-only (bubblewrap);
- network (`network: false`): a private network namespace with loopback only,
  shared by all the nodes of a job so that torchrun can still meet (bubblewrap);
- limits: memory and processes in a cgroup per node where one can be made
  (`cgroup.py`), else as rlimits (address space per process, RLIMIT_NPROC);
  CPU time and open files as rlimits (`prlimit`);
- lifetime: the job dies with the runner (bubblewrap's `--die-with-parent`
  and a private pid namespace; without bubblewrap, and with the sandbox off,
  `setpriv --pdeathsig` on the job's first process: torchrun gets TERM and
  ends its workers, a python job is killed, and what a python job started
  itself is left to the next `runner jobs --reap`).

Where bubblewrap is missing, `auto` runs with what works and logs one
`sandbox.degraded` record naming what is not enforced; `strict` refuses.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from runner import cgroup
from runner.cgroup import JobCgroup
from runner.errors import RunnerError

ALLOWED_FROM_CALLER = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TZ")

INSTALL_BWRAP = "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap)"


class SandboxUnavailableError(RunnerError):
    """`strict` was asked for and a layer cannot be enforced on this machine."""


class SandboxPolicy(BaseModel):
    """What to enforce around a job. Settings give the defaults; a job may override."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["auto", "strict", "off"] = "auto"
    filesystem: bool = True
    network: bool = True
    memory: int | None = Field(
        default=None, gt=0, description="Bytes per node (cgroup), else address space per process."
    )
    cpu_seconds: int | None = Field(default=None, gt=0)
    open_files: int | None = Field(default=None, gt=0)
    processes: int | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Confinement:
    """How to start one step: an argv prefix, and what is not enforced."""

    prefix: tuple[str, ...]
    not_enforced: tuple[Gap, ...]
    reports_namespaces: bool = False
    """bubblewrap writes the pid holding its namespaces to the report fd."""


def job_environ(
    caller: Mapping[str, str],
    *,
    bin_dir: Path,
    workdir: Path,
    tmpdir: Path,
    job_env: Mapping[str, str],
    torch: bool,
) -> dict[str, str]:
    """The complete environment of a job's processes, built from scratch."""
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


def _limits(policy: SandboxPolicy, held: JobCgroup | None = None) -> list[str]:
    """prlimit's flags: the limits no cgroup holds."""
    limits = {
        "--as": None if held and held.memory else policy.memory,
        "--cpu": policy.cpu_seconds,
        "--nofile": policy.open_files,
        "--nproc": None if held and held.pids else policy.processes,
    }
    return [f"{flag}={value}" for flag, value in limits.items() if value is not None]


@functools.cache
def bwrap_problem(bwrap: str | None) -> str | None:
    """Why bubblewrap cannot confine a job here (None: it can), tried once per process.

    Present is not enough: where unprivileged user namespaces are disabled
    (a sysctl, or an AppArmor policy), bwrap exists and fails at once.
    """
    if bwrap is None or shutil.which(bwrap) is None:
        return f"bubblewrap not found ({bwrap or 'bwrap'})"
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent"]
    try:
        subprocess.run([*probe, "true"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        said = getattr(exc, "stderr", b"") or b""
        return f"bubblewrap cannot run here: {said.decode(errors='replace').strip() or exc}"
    return None


class Gap(NamedTuple):
    """A layer asked for that this machine does not enforce: why, and how to get it."""

    layer: str
    cause: str
    fix: str | None = None


DELEGATE_CGROUP = (
    "run as root, or inside a cgroup delegated to this user "
    "(systemd: systemd-run --user --scope -p Delegate=yes runner ...)"
)


def gaps(policy: SandboxPolicy, bwrap: str | None) -> tuple[Gap, ...]:
    """Every layer of `policy` this machine cannot enforce, each with its cause and fix."""
    if policy.mode == "off":  # a limit asked for is still named when it does not apply
        asked = {"memory": policy.memory, "CPU time": policy.cpu_seconds}
        asked |= {"open files": policy.open_files, "processes": policy.processes}
        return tuple(Gap(f"{n} limit", "sandbox off") for n, value in asked.items() if value)
    found: list[Gap] = []
    problem = bwrap_problem(bwrap)
    if problem:
        layers = ["filesystem (read-only env and cache, private /tmp)"] * policy.filesystem
        layers += ["network isolation"] * (not policy.network)
        layers.append("dying with the runner (only the first process is tied to it)")
        found += [Gap(layer, problem, INSTALL_BWRAP) for layer in layers]
    if _limits(policy) and shutil.which("prlimit") is None:
        found.append(Gap("resource limits", "prlimit not found", "install util-linux"))
    no_cgroup = "no cgroup can be made here"
    if policy.memory and not cgroup.available("memory"):
        found.append(
            Gap(
                "memory limit of the whole node (an address-space rlimit per process instead)",
                f"{no_cgroup} (memory)",
                DELEGATE_CGROUP,
            )
        )
    if policy.processes and not cgroup.available("pids"):
        found.append(
            Gap(
                "process limit of the whole node (RLIMIT_NPROC per user instead, "
                "which never binds root)",
                f"{no_cgroup} (pids)",
                DELEGATE_CGROUP,
            )
        )
    return tuple(found)


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def check(policy: SandboxPolicy, bwrap: str | None) -> tuple[Gap, ...]:
    """The layers this machine cannot enforce; in strict mode, refuse instead."""
    found = gaps(policy, bwrap)
    if found and policy.mode == "strict":
        raise SandboxUnavailableError(
            f"sandbox is strict but cannot enforce: {'; '.join(g.layer for g in found)} "
            f"({'; '.join(_unique(g.cause for g in found))}); "
            f"{'; '.join(_unique(g.fix for g in found))}, "
            "or run with sandbox 'auto' to accept a weaker sandbox"
        )
    return found


def degraded_record(found: tuple[Gap, ...]) -> dict[str, object]:
    """The fields of the one `sandbox.degraded` record a job's log gets."""
    return {
        "not_enforced": [g.layer for g in found],
        "cause": "; ".join(_unique(g.cause for g in found)),
        "fix": "; ".join(_unique(g.fix for g in found)) or None,
    }


def confine(
    policy: SandboxPolicy,
    *,
    bwrap: str | None,
    jobdir: Path,
    workdir: Path,
    readable: tuple[Path, ...] = (),
    writable: tuple[Path, ...] = (),
    records: Path | None = None,
    join: int | None = None,
    report_fd: int | None = None,
    cgroups: JobCgroup | None = None,
    torch: bool = False,
) -> Confinement:
    """The argv prefix of one step.

    `readable`: paths the job reads that may live under /tmp (its env, its
    script), bound read-only again on top of the private /tmp.
    `records`: the folder of every job's records, hidden (an empty tmpfs);
    the job sees its own folder (`jobdir`) read-only, so it can neither
    forge its record, log or cancel request nor read or cancel another
    job's. `writable`: its working folder and TMPDIR, the only places it writes.
    `report_fd`: bubblewrap writes its namespaces there (the first node of a
    job with several and no network). `join`: that node's pid; later nodes
    enter its network namespace (one loopback for the job); each node keeps a
    pid namespace of its own, so it dies whole with the runner.
    `cgroups`: the node's cgroups; the limits they hold are not set as rlimits.
    `torch`: the step is a torchrun agent, which ends its workers on TERM.
    """
    not_enforced = check(policy, bwrap)
    # without bubblewrap's pid namespace only the first process is tied to the runner: torchrun
    # takes TERM as its cue to end its workers, a plain python dies at once
    tie = ["setpriv", f"--pdeathsig={'TERM' if torch else 'KILL'}", "--"]
    tie = tie if shutil.which("setpriv") else []
    if policy.mode == "off":
        return Confinement(tuple(tie), not_enforced)
    prefix: list[str] = list(cgroups.enter()) if cgroups else []
    if _limits(policy, cgroups) and shutil.which("prlimit"):
        prefix += ["prlimit", *_limits(policy, cgroups), "--"]
    if bwrap is None or bwrap_problem(bwrap):
        return Confinement((*prefix, *tie), not_enforced)
    if join is not None:
        prefix += ["nsenter", f"--net=/proc/{join}/ns/net", "--"]
    prefix += [bwrap]
    if policy.filesystem:
        prefix += ["--ro-bind", "/", "/", "--tmpfs", "/tmp"]
        for path in readable:
            prefix += ["--ro-bind", str(path), str(path)]
        if records is not None:  # after `readable`: a script's folder may hold the records
            prefix += ["--tmpfs", str(records)]
        prefix += ["--ro-bind", str(jobdir), str(jobdir)]
        for path in writable:
            prefix += ["--bind", str(path), str(path)]
    else:
        prefix += ["--bind", "/", "/"]
    prefix += ["--dev", "/dev", "--proc", "/proc", "--die-with-parent", "--unshare-pid"]
    if join is None and not policy.network:
        prefix.append("--unshare-net")
    if report_fd is not None:
        prefix += ["--info-fd", str(report_fd)]
    prefix += ["--chdir", str(workdir), "--"]
    return Confinement(tuple(prefix), not_enforced, reports_namespaces=report_fd is not None)
