"""Devices held by jobs (GPUs, CPU cores), and the queue of jobs waiting for them.

A unit (a GPU, a core) is held by an OS lock (`flock`) on its file under the
leases folder, taken by the process that runs the job: it is let go when the
job ends and when that process dies, `kill -9` included, so no reservation
outlives its holder. The holder writes the job's name into the file, for
`runner gpus`.

Jobs that want more than is free wait in a queue: a file each, locked by its
waiter (a dead waiter's file is skipped and removed). Only the first live waiter
takes units, and all it asked for at once (every kind together): first come,
first served. Taking happens under one lock for the whole folder, so two jobs
never take the same unit.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envs.files import flocked
from runner.outcome import Cause

POLL = 0.2
"""Seconds between a waiting job's looks at the pool."""

Wanted = int | tuple[str, ...]
"""How many units of a kind, or which ones."""


class Stopped(Exception):
    """The job stopped waiting (cancelled, timed out); the reason is its message."""

    def __init__(self, cause: Cause, reason: str) -> None:
        super().__init__(reason)
        self.cause = cause


@dataclass
class Lease:
    """Units held by one job, by kind; `release` (or the holder's death) lets them go."""

    held: dict[str, tuple[str, ...]] = field(default_factory=dict)
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


class Leases:
    """The leases of the pools of units (`kind` -> unit ids, in the order to give them)."""

    def __init__(self, folder: Path, pools: Mapping[str, Sequence[str]]) -> None:
        self.folder = folder
        self.pools = pools
        self.queue = folder / "queue"

    def _file(self, kind: str, unit: str) -> Path:
        return self.folder / f"{kind}-{unit}.lock"

    def holders(self, kind: str) -> dict[str, str | None]:
        """Each unit of `kind` -> the job that holds it now (None: free)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        held: dict[str, str | None] = {}
        for unit in self.pools.get(kind, ()):
            fd = _try_lock(self._file(kind, unit), shared=True)
            if fd is not None:
                os.close(fd)
                held[unit] = None
            else:
                held[unit] = self._file(kind, unit).read_text().strip() or "?"
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

    def _take(self, job: str, wanted: Mapping[str, Wanted]) -> Lease | None:
        """All the units asked for, of every kind, or none."""
        lease = Lease()
        for kind, want in wanted.items():
            candidates = want if isinstance(want, tuple) else tuple(self.pools.get(kind, ()))
            count = len(want) if isinstance(want, tuple) else want
            taken: list[str] = []
            for unit in candidates:
                if len(taken) == count:
                    break
                fd = _try_lock(self._file(kind, unit))
                if fd is None:
                    continue
                lease.fds.append(fd)
                os.ftruncate(fd, 0)
                os.pwrite(fd, job.encode(), 0)
                taken.append(unit)
            if len(taken) < count:
                lease.release()
                return None
            lease.held[kind] = tuple(taken)
        return lease

    def acquire(
        self,
        job: str,
        wanted: Mapping[str, Wanted],
        *,
        stop: Callable[[], Stopped | None],
        on_wait: Callable[[dict[str, object]], None],
    ) -> Lease:
        """Wait for the units, first come first served; `stop` says why to give up (Stopped)."""
        self.queue.mkdir(parents=True, exist_ok=True)
        ticket = self.queue / f"{time.time_ns():020d}-{job}"
        with flocked(self.folder / "take.lock"):  # no scan sees it before it is locked
            mine = _try_lock(ticket)
        assert mine is not None
        told = False
        try:
            while True:
                with flocked(self.folder / "take.lock"):
                    waiters = self._waiters()
                    if waiters and waiters[0] == ticket:
                        lease = self._take(job, wanted)
                        if lease is not None:
                            return lease
                if not told:  # once: the job's log says what it waits for
                    on_wait(self._waiting(wanted, waiters.index(ticket)))
                    told = True
                stopped = stop()
                if stopped is not None:
                    raise stopped
                time.sleep(POLL)
        finally:
            ticket.unlink(missing_ok=True)
            os.close(mine)

    def _waiting(self, wanted: Mapping[str, Wanted], ahead: int) -> dict[str, object]:
        held = {kind: self.holders(kind) for kind in wanted}
        return {
            "wants": {k: len(w) if isinstance(w, tuple) else w for k, w in wanted.items()},
            "free": {k: sum(1 for h in held[k].values() if h is None) for k in wanted},
            "held_by": sorted({h for k in wanted for h in held[k].values() if h}),
            "ahead": ahead,
        }
