from __future__ import annotations

import io
import json

import structlog

from envs.log import get_logger
from runner.logs import configure


def test_json_lines_with_timestamp_level_event_and_bound_context() -> None:
    stream = io.StringIO()
    configure("json", stream=stream)
    try:
        with structlog.contextvars.bound_contextvars(job="j1", step="node-0"):
            get_logger("test").info("env.hit", seconds=0.01)
        get_logger("test").debug("hidden")
    finally:
        structlog.reset_defaults()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "env.hit" and record["level"] == "info"
    assert record["job"] == "j1" and record["step"] == "node-0" and record["seconds"] == 0.01
    assert record["timestamp"].endswith("Z")


def test_console_format_is_readable() -> None:
    stream = io.StringIO()
    configure("console", stream=stream)
    try:
        get_logger("test").info("env.build", seconds=1.5)
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "env.build" in text and "seconds=1.5" in text
    assert not text.lstrip().startswith("{")
