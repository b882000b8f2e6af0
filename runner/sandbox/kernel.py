"""The kernel-knobs layer: what of /proc and /sys would let a job tune or read the kernel
itself is masked or read-only, as the container runtimes people trust do by default.

The lists are Docker's (moby `oci/defaults.go`: `MaskedPaths`, `ReadonlyPaths`) with what
Podman's (containers/common) adds; a path this kernel does not have is skipped, since
bubblewrap cannot make one in /proc. A file is masked by /dev/null over it, a folder by an
empty read-only tmpfs; a read-only path is bound onto itself read-only (bubblewrap covers
some of them itself, but not /proc/sys where the runner is root).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from runner.sandbox.layer import Host, Line, Place
from runner.sandbox.namespaces import unboxed
from runner.sandbox.policy import Gap, SandboxPolicy

MASKED = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
)
"""Read by nothing a training job needs; kernel memory, keys, timers and firmware tables."""

READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
"""Readable (a job may read its sysctls), never writable: `core_pattern` among them, which
the kernel runs as root outside every namespace on the next crash."""


def covers(root: Path = Path("/")) -> list[str]:
    """bubblewrap's options that mask and freeze the paths above that exist under `root`."""
    args: list[str] = []
    for name in MASKED:
        path = root / name.lstrip("/")
        if path.is_dir() and not path.is_symlink():
            args += ["--tmpfs", name, "--remount-ro", name]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", name]
    for name in READ_ONLY:
        if (root / name.lstrip("/")).exists():
            args += ["--ro-bind", name, name]
    return args


class KernelKnobs:
    """/proc/sys, /proc/sysrq-trigger and their kin read-only; /proc/kcore, /proc/keys,
    /sys/firmware and their kin masked."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return unboxed(policy, host, "kernel settings read-only (/proc/sys, sysrq) and masked")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += covers()
