"""The system-call layer: a seccomp filter on every job, compiled with libseccomp (`pyseccomp`,
its ctypes bindings) and handed to bubblewrap (`--seccomp FD`), which loads it last, right
before the job's first program.

A blocklist, as Flatpak's (`flatpak-run.c`: `setup_seccomp`) and within Docker's default
profile: what a training job never needs and what the kernel's history of escapes runs
through. Everything else is allowed, so torch, gloo and NCCL (threads, shared memory,
sockets, NUMA placement, CUDA's ioctls) run as they do outside.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Iterable

from runner.sandbox.layer import Host, Line, Place
from runner.sandbox.namespaces import unboxed
from runner.sandbox.policy import Gap, SandboxPolicy

CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412
TIOCLINUX = 0x541C

REFUSED = (
    # the file system and namespaces: a job's view is the one it was given
    *("mount", "umount", "umount2", "pivot_root", "chroot", "unshare", "setns"),
    # the kernel itself: modules, a new kernel, eBPF, the keyring, swap, the clock, reboot
    *("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load"),
    *("bpf", "add_key", "keyctl", "request_key", "swapon", "swapoff", "reboot"),
    *("settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "acct", "quotactl"),
    *("syslog", "iopl", "ioperm", "uselib", "lookup_dcookie", "nfsservctl", "vhangup"),
    # other processes and the kernel's internals: debuggers attach from outside the job
    *("ptrace", "perf_event_open", "kcmp", "userfaultfd", "open_by_handle_at"),
    *("move_pages", "migrate_pages", "fanotify_init", "modify_ldt"),
    # io_uring reaches around every rule here (Docker's default refuses it too)
    *("io_uring_setup", "io_uring_enter", "io_uring_register"),
)
"""Refused with EPERM."""

MISSING = (
    "clone3",
    *("open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"),
)
"""Refused with ENOSYS, as if this kernel had none: clone3, whose flags a filter cannot read
(glibc then falls back to `clone`), and the new mount API."""


class UnavailableError(Exception):
    """libseccomp cannot be loaded here."""


@functools.cache
def program() -> bytes:
    """The filter, compiled for this machine's architecture once per process."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError, OSError) as exc:  # no libseccomp.so.2
        raise UnavailableError(f"libseccomp cannot be loaded ({exc})") from None
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    eperm, enosys = seccomp.ERRNO(errno.EPERM), seccomp.ERRNO(errno.ENOSYS)
    for name in REFUSED:
        _add(rules, eperm, name)
    for name in MISSING:
        _add(rules, enosys, name)
    # a new user namespace, the door to every capability again (CVE-2022-0185 and kin)
    _add(rules, eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    # typing into the terminal the job was started from (CVE-2017-5226, CVE-2023-28100)
    for request in (TIOCSTI, TIOCLINUX):
        _add(rules, eperm, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    with os.fdopen(os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC), "w+b") as compiled:
        rules.export_bpf(compiled)
        compiled.seek(0)
        return compiled.read()


def _add(rules: object, action: int, name: str, *args: object) -> None:
    # a name that is no system call of this architecture (umount on x86-64, say) is skipped
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        rules.add_rule(action, name, *args)  # type: ignore[attr-defined]


def problem() -> str | None:
    """Why no filter can be made here (None: one can)."""
    try:
        program()
    except UnavailableError as exc:
        return str(exc)
    return None


def filter_fd() -> int:
    """A file descriptor bubblewrap reads the compiled filter from (one per step)."""
    fd = os.memfd_create("sandbox-runner-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Syscalls:
    """No mounts, namespaces, kernel modules, eBPF, keyring, ptrace or perf events inside
    a job; a new user namespace least of all."""

    LAYER = "system-call filter (seccomp: no mount, unshare, bpf, keyctl, ptrace, ...)"

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        yield from unboxed(policy, host, self.LAYER)
        if policy.mode != "off" and host.bwrap is not None and (said := problem()):
            yield Gap(self.LAYER, said, "install libseccomp (Debian/Ubuntu: libseccomp2)")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed and problem() is None:
            fd = filter_fd()
            line.fds.append(fd)
            line.inner += ["--seccomp", str(fd)]
