"""The order jobs were made in, kept beside their folder (`jobs.created` in the state
folder), so that `runner jobs` reads the newest page's records only, whatever their number.

The file is a cache, never the truth: one line `CREATED NAME` appended per job made (an
append of a few bytes is one write: concurrent runners do not mix lines). A job folder it
does not name (made by older code, or by a runner killed between its record and its line)
is read once, and appended; a line of a job since removed is skipped, and the file is
rewritten without them once they are half of it; a damaged line is skipped. So a lost or
damaged file costs one slow listing, never a wrong one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from envs.files import atomic_write_text

NAME = "jobs.created"


def record(root: Path, created: datetime, name: str) -> None:
    """Note a job just made (best effort: a listing that misses it reads its record)."""
    with contextlib.suppress(OSError):
        fd = os.open(root.parent / NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{created.isoformat()} {name}\n".encode())
        finally:
            os.close(fd)


def _read(root: Path) -> tuple[dict[str, str], int]:
    """Name -> when it was made (ISO text, which sorts as time does), and the line count."""
    try:
        text = (root.parent / NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}, 0
    found: dict[str, str] = {}
    lines = text.splitlines()
    for line in lines:
        created, _, name = line.partition(" ")
        if name and "/" not in name and created[:2] in ("19", "20"):  # damaged lines skipped
            found[name] = created  # the last line of a name wins (a name used again)
    return found, len(lines)


def newest(
    root: Path,
    names: Iterable[str],
    created_of: Callable[[str], datetime | None],
) -> list[str]:
    """`names` (the job folders there are), newest first; `created_of` reads a record's time
    for the few the file does not name (None: not a job, left out)."""
    known, lines = _read(root)
    present = set(names)
    order = {name: known[name] for name in present if name in known}
    for name in present - order.keys():
        created = created_of(name)
        if created is not None:
            order[name] = created.isoformat()
            record(root, created, name)
    if lines > 64 and len(order) < lines // 2:  # mostly removed jobs: rewrite it
        text = "".join(f"{order[n]} {n}\n" for n in sorted(order, key=order.__getitem__))
        with contextlib.suppress(OSError):
            atomic_write_text(root.parent / NAME, text)
    return sorted(order, key=lambda n: (order[n], n), reverse=True)
