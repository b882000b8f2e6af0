"""The low layer: spawn a process tree in its own session, pump its lines, end it.

Output is read line by line from pipes (each line capped, so memory stays
bounded whatever the job prints) and handed to a callback; nothing is
accumulated. Ending a tree signals every process tagged as the job's: TERM,
then KILL after a grace period, so no worker outlives its job.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

MAX_LINE = 64 * 1024
"""Longer lines are split into pieces of this many bytes."""
SHOW_AFTER = 1.0
"""Seconds after which the start of a line not yet ended is handed on all the same: a
progress bar (`\r` and no newline until the epoch ends) shows while it moves."""

OnLine = Callable[[str, str, bool], None]
"""Called with (stream, line, partial) for every line, from the pump threads.

`partial`: a piece of a line that goes on in the next call: the line was longer than
MAX_LINE, or the job wrote no more of it for SHOW_AFTER seconds."""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, its identity."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


@functools.cache
def host_identity() -> str:
    """This process's pid namespace and boot: where a recorded pid means this process's pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{Path('/proc/self/ns/pid').readlink()}@{boot}"
    except OSError:
        return "unknown"


def is_same_process(pid: int, ticks: int | None) -> bool:
    """True if `pid` still names the process that started at `ticks` (not a reused pid)
    and it has not ended: a zombie has (its parent has not waited for it yet, and a
    container's init may never do so)."""
    fields = _stat(pid)
    if ticks is None or fields is None:
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == ticks


TAG = "RUNNER_JOB_TAG"
"""Every process of a job inherits this variable; it is how the job's processes are found.

Process groups are not enough: torchrun starts each worker in a session of its
own, and a worker whose agent died is reparented away from the job's tree. The
environment is inherited across both, and /proc shows it to any process of
the same user, so a cancel from another process finds every member.
"""


def tagged(tag: str) -> list[int]:
    """Live processes carrying `TAG=tag` in their environment."""
    needle = f"\0{TAG}={tag}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:  # noqa: PTH123 - hot loop
                environ = b"\0" + fh.read()
        except OSError:  # gone, or not ours
            continue
        if needle in environ:
            found.append(int(entry.name))
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _is_sandbox(pid: int) -> bool:
    """bubblewrap itself, or the init of its pid namespace (also bwrap)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap"
    except OSError:
        return False


def end_tree(tag: str, grace: float, is_done: Callable[[], bool] | None = None) -> None:
    """TERM every process of the job, wait up to `grace` seconds, then KILL what is left.

    The sandbox's own processes are not sent TERM: the init of a pid namespace
    that dies takes every process in it down at once, so the job's handlers
    (saving a checkpoint) would get no grace at all. They end when the job does.
    """
    for pid in tagged(tag):
        if not _is_sandbox(pid):
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and tagged(tag) and not (is_done and is_done()):
        time.sleep(0.05)
    for _ in range(10):  # a process may fork while being killed: repeat until none is left
        left = tagged(tag)
        if not left:
            return
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.02)


class Process:
    """One process tree: its own session and process group, its output pumped to `on_line`."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        on_line: OnLine,
        tag: str,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.tag = tag
        self._proc = subprocess.Popen(
            list(argv),
            env={**env, TAG: tag},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
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

    def exited(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the leader to exit (its output may still flow)."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process ended and its output is drained; None on timeout."""
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        end_tree(self.tag, 0)  # strays the leader left behind end with it
        for pump in self._pumps:
            pump.join()
        return code

    def end(self, grace: float) -> None:
        """TERM then KILL every process of the tag; returns once the leader is reaped."""
        end_tree(self.tag, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(grace + 5)


def _pump(stream: IO[bytes] | None, name: str, on_line: OnLine) -> None:
    """Hand on each line the stream carries; a line's start that waits SHOW_AFTER seconds
    for its end (a progress bar) or grows past MAX_LINE goes on as a partial piece."""
    assert stream is not None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character split in two
    pending, since = b"", 0.0  # the line so far, and when it began

    def emit(piece: bytes, partial: bool, final: bool = False) -> None:
        text = decoder.decode(piece, final)
        on_line(name, text if partial else text.rstrip("\r\n"), partial)

    with stream:
        fd = stream.fileno()
        ready = select.poll()  # not select(): a busy process has fds above FD_SETSIZE
        ready.register(fd, select.POLLIN)
        while True:
            wait = None if not pending else max(0.0, since + SHOW_AFTER - time.monotonic())
            if not ready.poll(None if wait is None else wait * 1000):
                emit(pending, True)  # nothing more of it for a while: show what there is
                pending = b""
                continue
            data = os.read(fd, MAX_LINE)
            if not data:
                break
            if not pending:
                since = time.monotonic()
            pending += data
            start = 0  # each line once, then the rest kept: no copy per line
            while True:
                end = pending.find(b"\n", start, start + MAX_LINE)
                if end >= 0:
                    emit(pending[start : end + 1], False)
                    start = end + 1
                elif len(pending) - start >= MAX_LINE:
                    emit(pending[start : start + MAX_LINE], True)
                    start += MAX_LINE
                else:
                    break
            if start:
                pending, since = pending[start:], time.monotonic()
        if pending or decoder.getstate()[0]:  # the last line had no newline
            emit(pending, False, final=True)
