"""Finding processes by their command line, as the tests that kill things need."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def processes(matching: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids of the live processes whose argv (as bytes) `matching` accepts."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if matching(argv):
                found.append(int(entry.name))
    return found
