"""Isolation policy -> the job's environment, and an argv prefix that confines it.

The sandbox is a list of layers (`LAYERS`), each one small unit with the shape
of `layer.Layer`: what this machine cannot enforce of it, and what it adds to
the command line and the environment. `check` and `confine` read the same list.

- the environment is built from scratch: an allowlist from the caller plus the
  job's own variables (always, whatever the mode: secrets in the caller's
  environment never reach a job);
- `files`: what the job sees (the view), its HOME and data cache, mounts;
- `limits`: memory and processes in a cgroup per node, else rlimits; CPU time
  and open files as rlimits;
- `devices`: the node's GPUs and CPU cores;
- `namespaces`: lifetime (dies with the runner), network, IPC and hostname,
  capabilities;
- `kernel`: /proc/sys and its kin read-only, /proc/kcore and its kin masked;
- `identity`: root's jobs run as an unprivileged user;
- `syscalls`: a seccomp filter (no mount, unshare, bpf, keyctl, ptrace, ...);
- `scopes`: abstract Unix sockets and signals, the job's own only (Landlock).

Where bubblewrap is missing, `auto` runs with what works and logs one
`sandbox.degraded` record naming what is not enforced; `strict` refuses.
`off` keeps only the environment allowlist and the first process's tie to
the runner, and names any limit or mount it was asked for and does not make.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.outcome import Cause
from runner.sandbox import files, identity, landlock, scopes
from runner.sandbox.devices import Cpus, Devices
from runner.sandbox.files import FileView, Home, Mounts
from runner.sandbox.identity import Unprivileged
from runner.sandbox.kernel import KernelKnobs
from runner.sandbox.layer import (
    INSTALL_BWRAP,
    Exit,
    Explains,
    Host,
    Layer,
    Line,
    Place,
    bwrap_problem,
)
from runner.sandbox.limits import DELEGATE_CGROUP, Limits
from runner.sandbox.namespaces import Capabilities, Ipc, Lifetime, Network
from runner.sandbox.policy import Gap, Mount, SandboxPolicy, SandboxUnavailableError
from runner.sandbox.scopes import Scopes
from runner.sandbox.syscalls import Syscalls

__all__ = [
    "DELEGATE_CGROUP",
    "INSTALL_BWRAP",
    "LAYERS",
    "SIGNS",
    "Confinement",
    "Exit",
    "Gap",
    "Host",
    "Mount",
    "Place",
    "SandboxPolicy",
    "SandboxUnavailableError",
    "bwrap_problem",
    "check",
    "confine",
    "degraded_record",
    "explain",
    "identity",
    "job_environ",
    "landlock",
    "scopes",
]

ALLOWED_FROM_CALLER = (
    *("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TZ"),
    # what loads the GPU driver and CUDA: paths and capabilities, never secrets
    *("LD_LIBRARY_PATH", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_HOME", "CUDA_PATH"),
)

LAYERS: tuple[Layer, ...] = (
    Limits(),
    Cpus(),
    Network(),
    FileView(),  # the view first: the layers below bind on top of it
    Devices(),
    Lifetime(),
    KernelKnobs(),  # after the /proc that Lifetime mounts
    Home(),
    Mounts(),
    Ipc(),
    Capabilities(),
    Unprivileged(),  # after Capabilities: it adds back what setpriv needs to leave uid 0
    Syscalls(),
    Scopes(),  # last of the wrappers: it scopes bubblewrap and all the job starts
)
"""In command-line order: wrappers before bubblewrap, and later mounts on top of earlier ones."""

SIGNS = {
    name: pattern
    for layer in LAYERS
    if isinstance(layer, Explains)
    for name, pattern in layer.SIGNS.items()
}
"""Lines of a node's stderr that some layer reads as its own refusal (`Exit.signs`)."""


def explain(policy: SandboxPolicy, exit: Exit) -> tuple[Cause, str] | None:
    """The layer that ended a node, and its words; None where no layer did (the job did)."""
    for layer in LAYERS:
        if isinstance(layer, Explains) and (said := layer.explain(policy, exit)):
            return said
    return None


@dataclass(frozen=True)
class Confinement:
    """How to start one step: an argv prefix, variables, file descriptors, what is not enforced."""

    prefix: tuple[str, ...]
    not_enforced: tuple[Gap, ...]
    env: Mapping[str, str]
    fds: tuple[int, ...] = ()
    """To pass to the step, and close once it has started."""
    notes: tuple[str, ...] = ()
    """What the job was asked to see and does not, and why (logged once)."""
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
    layers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The complete environment of a job's processes, built from scratch.

    `layers`: what the sandbox's layers set (HOME, the data cache); the job's
    own variables win over them.
    """
    env = {k: caller[k] for k in ALLOWED_FROM_CALLER if k in caller}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env["TMPDIR"] = str(tmpdir)
    env["PWD"] = str(workdir)
    env["PYTHONUNBUFFERED"] = "1"  # lines reach the runner as they are printed
    env["PYTHONNOUSERSITE"] = "1"  # the env is the whole world: no ~/.local packages
    if torch:
        env["OMP_NUM_THREADS"] = "1"  # torchrun's default; set so it does not warn about it
    env.update(layers or {})
    env.update(job_env)
    return env


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def gaps(policy: SandboxPolicy, host: Host) -> tuple[Gap, ...]:
    """Every layer of `policy` this machine cannot enforce, each with its cause and fix."""
    return tuple(gap for layer in LAYERS for gap in layer.gaps(policy, host))


def check(policy: SandboxPolicy, bwrap: str | None) -> tuple[Gap, ...]:
    """The layers this machine cannot enforce; in strict mode, refuse instead."""
    return _checked(policy, Host.probe(bwrap))


def _checked(policy: SandboxPolicy, host: Host) -> tuple[Gap, ...]:
    found = gaps(policy, host)
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


def confine(policy: SandboxPolicy, bwrap: str | None, place: Place) -> Confinement:
    """The command-line prefix and variables of one step: every layer, in order."""
    host = Host.probe(bwrap)
    not_enforced = _checked(policy, host)
    line = Line(boxed=policy.mode != "off" and host.bwrap is not None)
    try:
        for layer in LAYERS:
            layer.add(policy, host, place, line)
    except BaseException:
        _close(line.fds)
        raise
    prefix = list(line.outer)
    if line.boxed:
        assert host.bwrap is not None
        if place.user is None:
            prefix += [host.bwrap, *line.inner, "--chdir", str(place.workdir), "--"]
        else:  # bubblewrap, root without capabilities, may not enter the job's user's folder
            prefix += [host.bwrap, *files.traversable(line.inner), "--", *line.inside]
            prefix += ["env", f"--chdir={place.workdir}", "--", f"PWD={place.workdir}"]
    return Confinement(
        tuple(prefix),
        not_enforced,
        dict(line.env),
        tuple(line.fds),
        tuple(line.notes),
        reports_namespaces=line.boxed and place.report_fd is not None,
    )


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        os.close(fd)
