"""A cgroup for each node of a job, where this machine lets the runner make one.

A cgroup limits what rlimits cannot: the memory a whole process tree really
uses (not its address space, which torch alone reserves by the gigabyte) and
the number of its processes (RLIMIT_NPROC counts per user, and never applies
to root). The runner makes a child of its own cgroup (cgroup v1 `memory` and
`pids` hierarchies, or v2 where its cgroup delegates those controllers), and
the job's first process moves itself in before it runs anything, so every
process of the node is counted. Where no cgroup can be made, the caller falls
back to rlimits.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from runner.process import is_same_process, start_ticks

ROOT = Path("/sys/fs/cgroup")
PREFIX = "sandbox-runner-"
STALE_AFTER = 60.0
"""Seconds after which an empty job cgroup left by a killed runner is removed."""

ENTER_FAILED = 125
ENTER = (
    'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || {'
    ' echo "sandbox-runner: cannot enter the cgroup $f: the limit would not apply" >&2;'
    f' exit {ENTER_FAILED}; }}; shift; done; shift; exec "$@"'
)
"""`sh -c ENTER sh PROCS... -- ARGV`: move this shell into each cgroup, then become ARGV.

A move that fails ends the node before ARGV runs: a limit asked for applies or
the job does not run."""


def _own_path(controller: str) -> Path | None:
    """This process's cgroup directory holding `controller` (v1), or its v2 cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    unified = (ROOT / "cgroup.controllers").exists()
    for line in lines:
        _id, names, path = line.split(":", 2)
        if unified and names == "":
            return ROOT / path.lstrip("/")
        if not unified and controller in names.split(","):
            return ROOT / names / path.lstrip("/")
    return None


def _read_counter(path: Path, key: str) -> int:
    """`key N` from a flat-keyed cgroup file such as memory.events; 0 if absent."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def _owner_tag() -> str:
    """Names this runner in its cgroups' names: pid and start time."""
    pid = os.getpid()
    return f"{pid}.{start_ticks(pid)}"


def _remove_stale(parent: Path) -> None:
    """Empty job cgroups whose runner died (rmdir refuses one with processes).

    Only a dead runner's: a live one may still have to read the events of a
    cgroup whose processes have all ended.
    """
    with contextlib.suppress(OSError):
        for child in parent.glob(f"{PREFIX}*"):
            pid, _, ticks = child.name.removeprefix(PREFIX).partition("-")[0].partition(".")
            owner_gone = not (
                pid.isdigit() and ticks.isdigit() and is_same_process(int(pid), int(ticks))
            )
            if owner_gone and time.time() - child.stat().st_mtime > STALE_AFTER:
                with contextlib.suppress(OSError):
                    child.rmdir()


def _make(controller: str, name: str, limits: dict[str, str]) -> Path | None:
    """A child cgroup with `limits` written, or None where the machine does not allow it."""
    parent = _own_path(controller)
    if parent is None or not parent.is_dir():
        return None
    if (ROOT / "cgroup.controllers").exists():
        try:  # v2: the controller must be delegated to our children
            if controller not in (parent / "cgroup.subtree_control").read_text().split():
                (parent / "cgroup.subtree_control").write_text(f"+{controller}")
        except OSError:
            return None
    _remove_stale(parent)
    path = parent / f"{PREFIX}{_owner_tag()}-{name}"
    try:
        path.mkdir()
        for file, value in limits.items():
            if (path / file).exists():
                (path / file).write_text(value)
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return path


def available(controller: str) -> bool:
    """Whether this runner can make a cgroup with `controller` here (tried once per process)."""
    return _available(ROOT, controller)


@functools.cache
def _available(_root: Path, controller: str) -> bool:
    path = _make(controller, f"probe-{os.getpid()}", {})
    if path is None:
        return False
    with contextlib.suppress(OSError):
        path.rmdir()
    return True


@dataclass(frozen=True)
class JobCgroup:
    """The cgroups of one node of a job: `memory` and `pids` are None where none could be made."""

    memory: Path | None
    pids: Path | None

    @classmethod
    def make(cls, name: str, *, memory: int | None, processes: int | None) -> JobCgroup:
        mem = None
        if memory is not None:
            mem = _make(
                "memory",
                name,
                {  # v1 (swap counted too, so a job cannot page its way past the limit), then v2
                    "memory.limit_in_bytes": str(memory),
                    "memory.memsw.limit_in_bytes": str(memory),
                    "memory.max": str(memory),
                    "memory.swap.max": "0",
                },
            )
        pids = None
        if processes is not None:
            pids = _make("pids", name, {"pids.max": str(processes)})
        return cls(mem, pids)

    def enter(self) -> tuple[str, ...]:
        """The argv prefix that moves the node's first process into these cgroups."""
        procs = [str(p / "cgroup.procs") for p in (self.memory, self.pids) if p is not None]
        return ("sh", "-c", ENTER, "sh", *procs, "--") if procs else ()

    def memory_exceeded(self) -> bool:
        """True once the kernel killed a process of the node for going over its memory."""
        if self.memory is None:
            return False
        return (
            _read_counter(self.memory / "memory.oom_control", "oom_kill") > 0
            or _read_counter(self.memory / "memory.events", "oom_kill") > 0
        )

    def processes_exceeded(self) -> bool:
        """True once a fork of the node was refused for going over its process count."""
        return self.pids is not None and _read_counter(self.pids / "pids.events", "max") > 0

    def remove(self) -> None:
        """Remove the cgroups; call once every process of the node has exited."""
        for path in (self.memory, self.pids):
            if path is None:
                continue
            for _ in range(50):  # the kernel frees a cgroup a moment after its last process
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
