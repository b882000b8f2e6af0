"""A standby warms at idle IO priority, and its job runs at the priority a cold job has, on
the CPU cores a cold job would.

A standby starts under `ionice -c 3` (util-linux), so all its processes and threads read
and write only when no one else does: its imports never slow a running job's data
loading. Every new task inherits its creator's IO priority, so at hand-over the runner
gives each of the standby's tasks its own, the one a cold job inherits, before the job's
first line runs. Any user may set that on its own processes (Linux's `ioprio_set`; root's
job, run as another uid, by root's CAP_SYS_NICE). The CPU side is the standby's own: its
warm-up thread runs at nice 19 (`program.py`). A job that asked for CPU cores gets them
when it is leased, after its standby started: then each of its tasks is pinned to them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

_IOPRIO = {"x86_64": (251, 252), "aarch64": (30, 31), "ppc64le": (273, 274), "s390x": (282, 283)}
"""`ioprio_set`'s and `ioprio_get`'s numbers where the runner knows them (`asm/unistd.h`)."""

_WHO_PROCESS = 1
"""IOPRIO_WHO_PROCESS: one task, by thread id."""


def _syscalls() -> tuple[int, int] | None:
    return _IOPRIO.get(os.uname().machine)


def idle_prefix() -> tuple[str, ...]:
    """What to put before a standby's argv: `ionice -c 3`, where its priority can be given
    back at hand-over; else nothing (the standby warms at the default IO priority)."""
    ionice = shutil.which("ionice")
    return (ionice, "-c", "3") if ionice and _syscalls() is not None else ()


def restore(pids: Iterable[int]) -> None:
    """Give every thread of these processes the IO priority a cold job would inherit: this
    thread's (a job is started by its runner)."""
    numbers = _syscalls()
    if numbers is None:
        return
    import ctypes  # here: only a hand-over needs it

    libc = ctypes.CDLL(None, use_errno=True)
    own = libc.syscall(numbers[1], _WHO_PROCESS, 0)
    if own < 0:
        return
    for task in _tasks(pids):
        libc.syscall(numbers[0], _WHO_PROCESS, task, own)  # one that just ended: an error


def pin(pids: Iterable[int], cpus: Iterable[int]) -> None:
    """Put every thread of these processes on these CPU cores (what `taskset` gives a cold
    job's first process, and each thread it starts inherits)."""
    cores = set(cpus)
    for task in _tasks(pids):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(task, cores)


def _tasks(pids: Iterable[int]) -> Iterator[int]:
    """Every thread of these processes, by thread id (none of a process that just ended)."""
    for pid in pids:
        try:
            tasks = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        yield from tasks
