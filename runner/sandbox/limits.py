"""The limits layer: memory and processes in a cgroup per node where one can be made
(`cgroup.py`), else as rlimits; CPU time and open files as rlimits (`prlimit`)."""

from __future__ import annotations

import os
import re
import shutil
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from runner import cgroup
from runner.cgroup import JobCgroup
from runner.outcome import Cause
from runner.sandbox.layer import SETUP_FAILED, SETUP_SIGN, Exit, Host, Line, Place
from runner.sandbox.policy import Gap, SandboxPolicy
from runner.units import format_size

DELEGATE_CGROUP = (
    "run as root; or, on cgroup v2, in a systemd user session with a D-Bus user bus "
    "(the runner asks it for a delegated scope), or alone in a cgroup delegated to "
    "this user (a container's own)"
)


def user_tasks(uid: int) -> int:
    """The processes and threads `uid` runs now: what RLIMIT_NPROC counts."""
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == uid:
                count += sum(1 for _ in (proc / "task").iterdir())
        except OSError:
            continue  # ended meanwhile
    return count


def rlimits(policy: SandboxPolicy, held: JobCgroup | None = None) -> list[str]:
    """prlimit's flags: the limits no cgroup holds.

    RLIMIT_NPROC counts every process and thread of the user, not the job's: the
    job may start `processes` more than the user runs when it starts (root is
    never held by it).
    """
    nproc = None if held and held.pids else policy.processes
    if nproc is not None and os.getuid() != 0:
        nproc += user_tasks(os.getuid())
    limits = {
        "--as": None if held and held.memory else policy.memory,
        "--cpu": policy.cpu_seconds,
        "--nofile": policy.open_files,
        "--nproc": nproc,
    }
    return [f"{flag}={value}" for flag, value in limits.items() if value is not None]


class Limits:
    SIGNS: ClassVar[dict[str, re.Pattern[str]]] = {
        "memory": re.compile(r"^MemoryError\b"),
        "processes": re.compile(r"^(BlockingIOError|OSError): \[Errno 11\] Resource temporarily"),
        "setup": SETUP_SIGN,
    }
    """The last line of Python's traceback when an rlimit refused an allocation, or a new
    process; the line of the cgroup's wrapper (or Landlock's) that could not set it up."""

    def explain(self, policy: SandboxPolicy, exit: Exit) -> tuple[Cause, str] | None:
        """The limit that ended the node, only where the kernel's own accounting says so (the
        cgroup's counters; for an rlimit, the error the job was given); or the sandbox that
        could not be set up, so the job never ran."""
        signs, held = exit.signs, exit.cgroup
        if "setup" in signs and exit.code == SETUP_FAILED:
            return (
                Cause.SANDBOX,
                "its sandbox could not be set up, so it never ran (its log says why)",
            )
        if policy.memory and held and held.memory_exceeded():
            return Cause.LIMIT, (
                f"memory limit of {format_size(policy.memory)} exceeded (killed by the kernel)"
            )
        if policy.memory and "memory" in signs and not (held and held.memory):
            return Cause.LIMIT, (
                f"memory limit of {format_size(policy.memory)} exceeded "
                "(MemoryError under the address-space rlimit)"
            )
        if policy.processes and held and held.processes_exceeded():
            return Cause.LIMIT, f"process limit of {policy.processes} reached"
        if policy.processes and "processes" in signs and not (held and held.pids):
            return Cause.LIMIT, (
                f"process limit of {policy.processes} reached (a new process refused under "
                "RLIMIT_NPROC, which counts every process of this user)"
            )
        if policy.cpu_seconds and exit.code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            return Cause.LIMIT, f"CPU time limit of {policy.cpu_seconds} s exceeded"
        return None

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if policy.mode == "off":  # a limit asked for is still named when it does not apply
            asked = {"memory": policy.memory, "CPU time": policy.cpu_seconds}
            asked |= {"open files": policy.open_files, "processes": policy.processes}
            yield from (Gap(f"{n} limit", "sandbox off") for n, value in asked.items() if value)
            return
        if rlimits(policy) and shutil.which("prlimit") is None:
            yield Gap("resource limits", "prlimit not found", "install util-linux")
        no_cgroup = "no cgroup can be made here"
        if policy.memory and not cgroup.available("memory"):
            yield Gap(
                "memory limit of the whole node (an address-space rlimit per process instead)",
                f"{no_cgroup} (memory){cgroup.why_not('memory')}",
                DELEGATE_CGROUP,
            )
        if policy.processes and not cgroup.available("pids"):
            yield Gap(
                "process limit of the whole node (RLIMIT_NPROC instead: as many more "
                "processes as asked than the user runs at the start; never binds root)",
                f"{no_cgroup} (pids){cgroup.why_not('pids')}",
                DELEGATE_CGROUP,
            )

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if policy.mode == "off":
            return
        if place.cgroups:
            line.outer += place.cgroups.enter()
        flags = rlimits(policy, place.cgroups)
        if flags and shutil.which("prlimit"):
            line.outer += ["prlimit", *flags, "--"]
