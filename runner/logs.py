"""structlog, configured once: JSON lines for machines, a readable console on a TTY.

Every record carries `timestamp`, `level` and `event`, plus whatever context
was bound (`job`, `step`, `rank`, ...) with structlog's contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]

_SHARED: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def json_processors() -> list[structlog.typing.Processor]:
    """The chain that turns an event dict into one JSON line (also used for job log files)."""
    return [
        *_SHARED,
        structlog.processors.dict_tracebacks,
        structlog.processors.JSONRenderer(sort_keys=False),
    ]


def configure(
    fmt: LogFormat = "auto", level: LogLevel = "info", stream: TextIO | None = None
) -> None:
    """Send the runner's own events to `stream` (stderr), as JSON unless it is a terminal."""
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[structlog.typing.Processor] = (
        [*_SHARED, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
        if console
        else json_processors()
    )
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
