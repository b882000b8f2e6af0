"""GPUs held by jobs, and the queue of jobs waiting for them.

A GPU is held by an OS lock (`flock`) on its file under the leases folder, taken
by the process that runs the job: it is let go when the job ends and when that
process dies, `kill -9` included, so no reservation outlives its holder. The
holder writes the job's name into the file, for `runner gpus`.

Jobs that want more GPUs than are free wait in a queue: a file each, locked by
its waiter (a dead waiter's file is skipped and removed). Only the first live
waiter takes GPUs, and only as many as it asked for, all at once: first come,
first served. Taking GPUs happens under one lock for the whole folder, so two
jobs never take the same one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runner.gpus import Gpu

POLL = 0.2
"""Seconds between a waiting job's looks at the GPUs."""


class Stopped(Exception):
    """The job stopped waiting (cancelled, timed out); the reason is its message."""


@dataclass
class Lease:
    """GPUs held by one job; `release` (or the holder's death) lets them go."""

    gpus: tuple[Gpu, ...]
    fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def _try_lock(path: Path, shared: bool = False) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class GpuLeases:
    """The leases of one pool of GPUs, kept in `folder`."""

    def __init__(self, folder: Path, pool: list[Gpu]) -> None:
        self.folder = folder
        self.pool = pool
        self.queue = folder / "queue"

    def _file(self, gpu: Gpu) -> Path:
        return self.folder / f"gpu-{gpu.uuid}.lock"

    def holders(self) -> dict[str, str | None]:
        """Each GPU's UUID -> the job that holds it now (None: free)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        held: dict[str, str | None] = {}
        for gpu in self.pool:
            fd = _try_lock(self._file(gpu), shared=True)
            if fd is not None:
                os.close(fd)
                held[gpu.uuid] = None
            else:
                held[gpu.uuid] = self._file(gpu).read_text().strip() or "?"
        return held

    def _waiters(self) -> list[Path]:
        """Live waiters, first come first; files of dead ones are removed."""
        live = []
        for path in sorted(self.queue.iterdir()):
            fd = _try_lock(path)
            if fd is None:
                live.append(path)
                continue
            os.close(fd)  # nobody waits behind it any more
            path.unlink(missing_ok=True)
        return live

    def _take(self, job: str, wanted: int | tuple[Gpu, ...]) -> Lease | None:
        """All the GPUs asked for, or none."""
        lease = Lease(())
        candidates = wanted if isinstance(wanted, tuple) else tuple(self.pool)
        count = len(wanted) if isinstance(wanted, tuple) else wanted
        taken: list[Gpu] = []
        for gpu in candidates:
            if len(taken) == count:
                break
            fd = _try_lock(self._file(gpu))
            if fd is None:
                continue
            lease.fds.append(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, job.encode(), 0)
            taken.append(gpu)
        if len(taken) < count:
            lease.release()
            return None
        lease.gpus = tuple(taken)
        return lease

    def acquire(
        self,
        job: str,
        wanted: int | tuple[Gpu, ...],
        *,
        stop: Callable[[], str | None],
        on_wait: Callable[[dict[str, object]], None],
    ) -> Lease:
        """Wait for the GPUs, first come first served; `stop` says why to give up (Stopped)."""
        self.queue.mkdir(parents=True, exist_ok=True)
        ticket = self.queue / f"{time.time_ns():020d}-{job}"
        mine = _try_lock(ticket)
        assert mine is not None
        told = False
        try:
            while True:
                with _locked(self.folder / "take.lock"):
                    waiters = self._waiters()
                    if waiters and waiters[0] == ticket:
                        lease = self._take(job, wanted)
                        if lease is not None:
                            return lease
                if not told:  # once: the job's log says what it waits for
                    held = self.holders()
                    on_wait(
                        {
                            "wants": len(wanted) if isinstance(wanted, tuple) else wanted,
                            "free": sum(1 for h in held.values() if h is None),
                            "held_by": sorted({h for h in held.values() if h}),
                            "ahead": max(0, waiters.index(ticket)) if ticket in waiters else 0,
                        }
                    )
                    told = True
                why = stop()
                if why:
                    raise Stopped(why)
                time.sleep(POLL)
        finally:
            ticket.unlink(missing_ok=True)
            os.close(mine)
