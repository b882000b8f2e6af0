"""Loggers that import structlog when they first log.

structlog (with the console renderer it loads) costs about 50 ms to import: a
command that never logs (`runner status`, `runner jobs`) should not pay it.
`get_logger` returns a stand-in that imports structlog on its first call;
`when_first_used` sets up structlog then (the runner's `configure`), or at
once if something already logged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger


class _State:
    setup: Callable[[], None] | None = None
    used = False

    @classmethod
    def start(cls) -> None:
        cls.used = True
        setup, cls.setup = cls.setup, None
        if setup is not None:
            setup()


def when_first_used(setup: Callable[[], None]) -> None:
    """Run `setup` before the first record of any logger from here (now, if one was used)."""
    _State.setup = setup
    if _State.used:
        _State.start()


class _Deferred:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        import structlog

        if not _State.used or _State.setup is not None:
            _State.start()
        return getattr(structlog.get_logger(self._name), method)


def get_logger(name: str) -> FilteringBoundLogger:
    """structlog's `get_logger(name)`, imported when the logger is first used."""
    return cast("FilteringBoundLogger", _Deferred(name))
