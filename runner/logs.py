"""structlog, configured once: JSON lines for machines, a readable console on a TTY.

Every record carries `timestamp`, `level` and `event`, plus whatever context
was bound (`job`, `step`, `rank`, ...) with structlog's contextvars.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from envs import log as deferred
from envs.files import atomic_write_text

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger, Processor

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


def colour(stream: TextIO) -> bool:
    """Whether to write escapes (colour, bold, dim) to `stream`: never with `NO_COLOR` set,
    always with `FORCE_COLOR`, else on a terminal (no-color.org, as uv and pixi do)."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or stream.isatty()


def console_renderer(stream: TextIO) -> Any:
    """structlog's console renderer for `stream`, with escapes only where `colour` says."""
    import structlog

    return structlog.dev.ConsoleRenderer(colors=colour(stream))


def configure(
    fmt: LogFormat = "auto", level: LogLevel = "info", stream: TextIO | None = None
) -> None:
    """Send the runner's own events to `stream` (stderr), as JSON unless it is a terminal.

    structlog is set up when the first event is logged (see `envs.log`): a
    command that logs nothing does not import it.
    """
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())

    def setup() -> None:
        import structlog

        render: Processor = (
            console_renderer(out) if console else structlog.processors.JSONRenderer(sort_keys=False)
        )
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                *([] if console else [structlog.processors.dict_tracebacks]),
                render,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.getLevelName(level.upper())
            ),
            logger_factory=structlog.PrintLoggerFactory(out),
            cache_logger_on_first_use=False,
        )

    deferred.when_first_used(setup)


Echo = Callable[[dict[str, Any]], None]


_LEVELS = logging.getLevelNamesMapping()


class JobLog:
    """A job's log: every record appended to `log.jsonl` as one JSON line, as it happens.

    The file is line-buffered, so a reader in another process (`runner logs -f`,
    a second SDK backend) sees each record when it is written. `echo`, when
    given, also receives each record at `level` or above, and every output line
    (the CLI prints them; the SDK backend does not). An echo that fails (a
    closed pipe) is dropped; the job and its log go on. A write to the file that
    fails (a full disk) stops the writes and is kept in `problem`: the job's owner
    ends the job, as a log with holes in it would lie about what the job did.
    """

    def __init__(self, path: Path, echo: Echo | None = None, level: str = "info") -> None:
        self.path = path
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # its user's alone
        self._fh = path.open("a+", encoding="utf-8", buffering=1)
        self._inode = os.fstat(self._fh.fileno()).st_ino
        self._lock = threading.Lock()
        self._echo = echo
        self._level = _LEVELS[level.upper()]
        self.problem: str | None = None
        """Why the log stopped being written, once it did."""
        import structlog

        self.logger: FilteringBoundLogger = structlog.wrap_logger(
            None,
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                self._write,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            context_class=dict,
            cache_logger_on_first_use=False,
        )

    def _write(self, _logger: object, _name: str, event: MutableMapping[str, Any]) -> Any:
        record = {
            "timestamp": event.pop("timestamp"),
            "level": event.pop("level"),
            "event": event.pop("event"),
            **event,
        }
        line = json.dumps(record, default=str, ensure_ascii=False)
        with self._lock:  # one order for the file and the echo
            if self.problem is None:
                try:
                    self._fh.write(line + "\n")
                except OSError as exc:
                    self.problem = f"its log {self.path} cannot be written: {exc.strerror or exc}"
            shown = (
                record["event"] == "output"
                or _LEVELS.get(record["level"].upper(), 0) >= self._level
            )
            if self._echo is not None and shown:
                try:
                    self._echo(record)
                except Exception:
                    self._echo = None
        import structlog

        raise structlog.DropEvent

    def check(self) -> None:
        """Put the log back where readers look if it was deleted or replaced meanwhile.

        The runner kept writing to the file it opened, so nothing was lost; one
        `log.restored` record says that it happened.
        """
        try:
            if self.path.stat().st_ino == self._inode:
                return
        except FileNotFoundError:
            pass
        self.logger.warning("log.restored", path=str(self.path), cause="deleted or replaced")
        with self._lock:
            self._fh.seek(0)
            text = self._fh.read()
        if self.path.parent.is_dir():  # a job deleted as a whole stays deleted
            with contextlib.suppress(OSError):
                atomic_write_text(self.path, text)

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):  # said already, in `problem`
            self._fh.close()


def as_text(record: dict[str, Any], ranks: bool) -> str:
    """An output record as the plain line the job printed, prefixed with its rank if asked."""
    line = str(record.get("line", ""))
    if ranks and record.get("rank") is not None:
        return f"[rank {record['rank']}] {line}"
    return line
