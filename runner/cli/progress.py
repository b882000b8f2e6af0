"""A spinner on the terminal while an environment resolves or builds: the one slow step."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status


class EnvProgress:
    """Fed the job's records; shows what the cache is doing until the env is ready."""

    def __init__(self, console: Console | None) -> None:
        self._console = console
        self._status: Status | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        event = record["event"]
        if event == "env.resolve":
            self._show(f"resolving {' '.join(record.get('requirements') or []) or 'an empty set'}")
        elif event == "env.build.start":
            self._show(f"installing {record.get('packages', '?')} packages into a new environment")
        elif event.startswith(("env.", "job.")) and event not in {"env.resolved"}:
            self.stop()

    def _show(self, text: str) -> None:
        if self._console is None:
            return
        if self._status is None:
            self._status = self._console.status(text, spinner="dots")
            self._status.start()
        else:
            self._status.update(text)

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def terminal_progress() -> EnvProgress:
    """Progress on stderr when it is a terminal; silent otherwise."""
    import sys

    if not sys.stderr.isatty():
        return EnvProgress(None)
    from rich.console import Console

    return EnvProgress(Console(stderr=True))


@contextlib.contextmanager
def resolving(requirements: Sequence[object]) -> Iterator[None]:
    """A spinner naming the package set while the block resolves (and builds) it."""
    progress = terminal_progress()
    progress({"event": "env.resolve", "requirements": [str(r) for r in requirements]})
    try:
        yield
    finally:
        progress.stop()
