"""structlog, configured once: lines for people by default, JSON lines when asked.

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
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from envs import log as deferred
from envs.files import atomic_write_text

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger, Processor

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

Listener = Callable[[dict[str, Any]], None]
_listeners: list[Listener] = []


def colour(stream: TextIO) -> bool:
    """Whether to write escapes (colour, bold, dim) to `stream`: never with `NO_COLOR` set,
    always with `FORCE_COLOR`, else on a terminal (no-color.org, as uv and pixi do)."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or stream.isatty()


def console_renderer(stream: TextIO) -> Any:
    """structlog's console renderer for `stream` (`-v`: every field, timestamps), with
    escapes only where `colour` says."""
    import structlog

    return structlog.dev.ConsoleRenderer(colors=colour(stream))


def say(record: MutableMapping[str, Any], stream: TextIO, verbose: bool = False) -> str | None:
    """A record as the text mode prints it on `stream`: its line for people
    (`runner.human`; None: it has none), or, `verbose`, every field as structlog's console
    renderer writes them."""
    if verbose:
        return str(console_renderer(stream)(None, str(record["level"]), dict(record)))
    from runner.human import line, paint

    text = line(record)
    if text is None or not colour(stream):
        return text
    return paint(text, str(record.get("level", "info")))


def human_renderer(stream: TextIO) -> Callable[[object, str, MutableMapping[str, Any]], str]:
    """A structlog processor writing each record as `say` does, dropping those it says nothing
    of."""

    def render(_logger: object, _name: str, event: MutableMapping[str, Any]) -> str:
        text = say(event, stream)
        if text is None:
            import structlog

            raise structlog.DropEvent
        return text

    return render


@contextlib.contextmanager
def listen(listener: Listener) -> Iterator[None]:
    """Give `listener` every record the runner logs outside a job while the block runs
    (a progress line feeds on them)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def _heard(_logger: object, _name: str, event: MutableMapping[str, Any]) -> Any:
    for listener in list(_listeners):
        with contextlib.suppress(Exception):
            listener(dict(event))
    return event


def configure(
    fmt: LogFormat = "text",
    level: LogLevel = "info",
    stream: TextIO | None = None,
    verbose: bool = False,
) -> None:
    """Send the runner's own events to `stream` (stderr): lines for people, or JSON lines
    when asked; `verbose`: every field, with timestamps.

    structlog is set up when the first event is logged (see `envs.log`): a
    command that logs nothing does not import it.
    """
    out = stream or sys.stderr

    def setup() -> None:
        import structlog

        render: Processor
        if fmt == "json":
            render = structlog.processors.JSONRenderer(sort_keys=False)
        elif verbose:
            render = console_renderer(out)
        else:
            render = human_renderer(out)
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                _heard,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                *([structlog.processors.dict_tracebacks] if fmt == "json" else []),
                render,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.getLevelName("DEBUG" if verbose else level.upper())
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
