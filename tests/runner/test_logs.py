from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


SGR = re.compile(r"\x1b\[[0-9;]*m")
"""An escape that sets colour, bold or dim."""


def _on_a_terminal(environ: dict[str, str], cwd: Path, *args: str) -> str:
    """What `runner ARGS` writes on a terminal (util-linux `script` gives it a pty)."""
    runner = str(Path(sys.executable).parent / "runner")
    command = shlex.join([runner, *args])
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    return proc.stdout


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux's script")
def test_no_color_means_no_escape_of_any_style_and_force_color_gives_them(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    hello = tmp_path / "hello.py"
    hello.write_text("print('hello')\n")
    plain = {k: v for k, v in cli_environ.items() if k not in {"NO_COLOR", "FORCE_COLOR"}}
    shown = _on_a_terminal(plain, tmp_path, "train", "--name", "a", str(hello))
    assert "hello" in shown and SGR.search(shown), shown  # a terminal: its colours
    shown = _on_a_terminal({**plain, "NO_COLOR": "1"}, tmp_path, "train", "--name", "b", str(hello))
    assert "hello" in shown and not SGR.search(shown), repr(shown)
    runner = str(Path(sys.executable).parent / "runner")
    piped = subprocess.run(  # piped: plain, unless forced
        [runner, "train", "--name", "c", str(hello)],
        env={**plain, "FORCE_COLOR": "1"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert SGR.search(piped.stderr), piped.stderr
