"""What uv says while it installs, as counts: downloads done of those announced, and bytes.

uv, unless `--quiet`, writes `Downloading torch (180.2MiB)` when a large file
starts and ` Downloaded torch` when it is in, then `Prepared N packages in T`
and `Installed N packages in T`, on stderr and the same whether or not it is a
terminal. `UvProgress` reads those lines and logs an `env.progress` record each
time the counts move, for a front end to show (the CLI's progress line).

Between a download's two lines uv shows its bytes only on a terminal (its bars),
and the runner reads uv's stderr through a pipe. So the bytes of the downloads in
flight are what uv's connections have received since the first one began
(`received`, from `envs.received`), never more than the sizes announced.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

_STARTED = re.compile(r"^\s*Downloading (\S+) \((\d+(?:\.\d+)?)\s*([KMGT]?i?B)\)")
_DONE = re.compile(r"^\s*Downloaded (\S+)\s*$")
_PREPARED = re.compile(r"^\s*Prepared \d+ packages? in ")
_POWERS = {"B": 0, "KiB": 1, "MiB": 2, "GiB": 3, "TiB": 4}


@dataclass
class UvProgress:
    """Counts from uv's lines and connections, logged to `log` as `env.progress` when they
    change."""

    log: Logger
    packages: int
    sizes: dict[str, int] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    phase: str = "downloading"
    received_now: int | None = None
    """What uv has received so far (bytes), at the last look."""
    received_before: int | None = None
    """What it had received when its first announced download began."""
    said: tuple[int, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, line: str) -> None:
        with self.lock:
            if started := _STARTED.match(line):
                number, unit = float(started[2]), started[3]
                self.sizes[started[1]] = int(number * 1024 ** _POWERS.get(unit, 0))
                if self.received_before is None:
                    self.received_before = self.received_now
            elif finished := _DONE.match(line):
                self.done.add(finished[1])
            elif _PREPARED.match(line):
                self.phase = "installing"
            else:
                return
            self._say()

    def received(self, so_far: int) -> None:
        """uv has received `so_far` bytes in all (`envs.proc.stream`'s `on_received`)."""
        with self.lock:
            self.received_now = so_far
            if self.sizes and self.received_before is None:  # announced before the first look
                self.received_before = so_far
            if self.sizes and self.phase == "downloading":
                self._say()

    def _say(self) -> None:
        total = sum(self.sizes.values())
        done = sum(self.sizes[name] for name in self.done if name in self.sizes)
        if self.received_now is not None and self.received_before is not None:
            done = max(done, min(total, self.received_now - self.received_before))
        counts = (len(self.sizes), len(self.done & self.sizes.keys()), total, done)
        if counts == self.said and self.phase == "downloading":
            return  # nothing moved since the last look
        self.said = counts
        self.log.info(
            "env.progress",
            phase=self.phase,
            packages=self.packages,
            downloads=counts[0],
            downloads_done=counts[1],
            bytes_total=total,
            bytes_done=done,
        )
