"""What uv says while it installs, as counts: downloads done of those announced, and bytes.

uv, unless `--quiet`, writes `Downloading torch (180.2MiB)` when a large file
starts and ` Downloaded torch` when it is in, then `Prepared N packages in T`
and `Installed N packages in T`, on stderr and the same whether or not it is a
terminal. `UvProgress` reads those lines and logs an `env.progress` record each
time the counts move, for a front end to show (the CLI's progress line).
"""

from __future__ import annotations

import re
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
    """Counts from uv's lines, logged to `log` as `env.progress` when they change."""

    log: Logger
    packages: int
    sizes: dict[str, int] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    phase: str = "downloading"

    def __call__(self, line: str) -> None:
        if started := _STARTED.match(line):
            number, unit = float(started[2]), started[3]
            self.sizes[started[1]] = int(number * 1024 ** _POWERS.get(unit, 0))
        elif finished := _DONE.match(line):
            self.done.add(finished[1])
        elif _PREPARED.match(line):
            self.phase = "installing"
        else:
            return
        self.log.info(
            "env.progress",
            phase=self.phase,
            packages=self.packages,
            downloads=len(self.sizes),
            downloads_done=len(self.done & self.sizes.keys()),
            bytes_total=sum(self.sizes.values()),
            bytes_done=sum(self.sizes[name] for name in self.done if name in self.sizes),
        )
