"""Progress on long work: resolving, installing (uv's downloads, rattler's), waiting for
devices. On a terminal a spinner line that moves; piped, a plain line every ~10 s so a
CI log shows life, as uv's and pixi's do."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runner.human import plural
from runner.units import format_duration, format_size

if TYPE_CHECKING:
    from rich.status import Status

PIPED_EVERY = 10.0
"""Seconds between two progress lines when the output is no terminal."""


def _doing(record: dict[str, Any], before: str | None) -> str | None:
    """What the work that `record` starts or moves is, in words; None: it has ended."""
    event = record["event"]
    if event == "env.resolve":
        wanted = " ".join(record.get("requirements") or []) or "an empty set"
        return f"Resolving {wanted}"
    if event == "env.build.start":
        return f"Installing {plural(record.get('packages', 0), 'package')}"
    if event == "env.progress":
        head = (before or "Installing").split(":")[0]
        if record.get("phase") == "installing":
            return f"{head}: downloaded, linking"
        total, done = record.get("bytes_total", 0), record.get("bytes_done", 0)
        return (
            f"{head}: {record.get('downloads_done', 0)}/{record.get('downloads', 0)} "
            f"downloaded, {format_size(done)}/{format_size(total)}"
        )
    if event == "env.conda.progress":
        return (
            f"Installing conda packages: {record.get('done', 0)} of {record.get('packages', 0)}, "
            f"{format_size(record.get('downloaded_bytes', 0))} downloaded"
        )
    if event == "job.queued":
        from runner.human import line

        return line(record)
    if event in ("env.resolved", "env.layer", "env.damaged", "pip.option_not_used"):
        return before  # said in a line of its own; the work goes on
    if event.startswith(("env.", "job.", "sandbox.")):
        return None
    return before


class Progress:
    """Fed the runner's records; shows what it is doing until the work ends."""

    def __init__(self, stream: TextIO | None, terminal: bool) -> None:
        self._stream = stream
        self._terminal = terminal
        self._status: Status | None = None
        self._doing: str | None = None
        self._since = 0.0
        self._said = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        if self._stream is None:
            return
        with self._lock:
            doing = _doing(record, self._doing)
            if doing is None:
                self._end()
                return
            if self._doing is None:
                self._since = self._said = time.monotonic()
            self._doing = doing
            self._show()
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
                self._ticker.start()

    def _text(self) -> str:
        return f"{self._doing} ({format_duration(time.monotonic() - self._since)})"

    def _show(self) -> None:
        if not self._terminal:
            return
        if self._status is None:
            from rich.console import Console

            self._status = Console(file=self._stream, highlight=False).status("", spinner="dots")
            self._status.start()
        text, room = self._text(), self._status.console.width - 3  # the spinner's, a space
        self._status.update(text if len(text) <= room else text[: room - 1] + "…")  # one line

    def _tick(self) -> None:
        while not self._wake.wait(0.5 if self._terminal else 1.0):
            with self._lock:
                if self._doing is None:
                    continue
                if self._terminal:
                    self._show()
                elif time.monotonic() - self._said >= PIPED_EVERY:
                    self._said = time.monotonic()
                    assert self._stream is not None
                    with contextlib.suppress(OSError, ValueError):
                        self._stream.write(self._text() + "\n")
                        self._stream.flush()

    def _end(self) -> None:
        self._doing = None
        if self._status is not None:
            self._status.stop()
            self._status = None

    def stop(self) -> None:
        with self._lock:
            self._end()
        self._wake.set()


def progress(stream: TextIO | None = None) -> Progress:
    """Progress on `stream` (stderr): moving on a terminal, a line every ~10 s when piped."""
    out = stream or sys.stderr
    return Progress(out, terminal=out.isatty())


@contextlib.contextmanager
def resolving(requirements: Sequence[object]) -> Iterator[None]:
    """Progress while the block resolves (and builds) `requirements`, fed by the runner's
    records (see `runner.logs.listen`)."""
    from runner.logs import listen

    shown = progress()
    shown({"event": "env.resolve", "requirements": [str(r) for r in requirements]})
    try:
        with listen(shown):
            yield
    finally:
        shown.stop()
