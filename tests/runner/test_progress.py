from __future__ import annotations

import io

from rich.console import Console

from runner.cli.progress import EnvProgress


def test_spinner_follows_the_cache_events_and_stops_when_the_env_is_ready() -> None:
    out = io.StringIO()
    progress = EnvProgress(Console(file=out, force_terminal=True, width=100))
    progress({"event": "env.resolve", "requirements": ["torch==2.13.0", "numpy"]})
    assert progress._status is not None
    assert progress._status.status == "resolving torch==2.13.0 numpy"
    progress({"event": "env.resolved", "packages": 11})
    progress({"event": "env.build.start", "packages": 11})
    assert progress._status.status == "installing 11 packages into a new environment"
    progress({"event": "env.build", "seconds": 9.0})
    assert progress._status is None
    assert "installing 11 packages" in out.getvalue()


def test_silent_without_a_terminal() -> None:
    progress = EnvProgress(None)
    progress({"event": "env.resolve", "requirements": ["numpy"]})
    assert progress._status is None
    progress.stop()
