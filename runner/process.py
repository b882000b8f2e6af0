"""The low layer: spawn a process tree in its own session, pump its lines, end it.

Output is read line by line from pipes (each line capped, so memory stays
bounded whatever the job prints) and handed to a callback; nothing is
accumulated. Ending a tree signals the whole process group: TERM, then KILL
after a grace period, so no worker outlives its job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

MAX_LINE = 64 * 1024
"""Longer lines are split into pieces of this many bytes."""

OnLine = Callable[[str, str], None]
"""Called with (stream, line) for every line, from the pump threads."""


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, its identity."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_same_process(pid: int, ticks: int | None) -> bool:
    """True if `pid` still names the process that started at `ticks` (not a reused pid)."""
    return ticks is not None and start_ticks(pid) == ticks


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)


def end_group(pgid: int, grace: float, is_done: Callable[[], bool] | None = None) -> None:
    """TERM the group, wait up to `grace` seconds, then KILL what is left."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if (is_done() if is_done else False) or not group_alive(pgid):
            break
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)


class Process:
    """One process tree: its own session and process group, its output pumped to `on_line`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        on_line: OnLine,
    ) -> None:
        self._proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.pid = self._proc.pid
        self.pgid = self.pid  # a new session's leader leads its own group
        self.ticks = start_ticks(self.pid)
        self._pumps = [
            threading.Thread(target=_pump, args=(stream, name, on_line), daemon=True)
            for stream, name in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr"))
        ]
        for pump in self._pumps:
            pump.start()

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process ended and its output is drained; None on timeout."""
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        signal_group(self.pgid, signal.SIGKILL)  # strays left behind by the leader end with it
        for pump in self._pumps:
            pump.join()
        return code

    def end(self, grace: float) -> None:
        """TERM then KILL the whole group; returns once the leader is reaped."""
        end_group(self.pgid, grace, lambda: self._proc.poll() is not None)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(grace + 5)
        # workers that ignored TERM are gone too: KILL went to the group, not just the leader
        signal_group(self.pgid, signal.SIGKILL)


def _pump(stream: IO[bytes] | None, name: str, on_line: OnLine) -> None:
    assert stream is not None
    with stream:
        while chunk := stream.readline(MAX_LINE):
            on_line(name, chunk.decode("utf-8", "replace").rstrip("\r\n"))
