"""The progress line: what it says of each kind of long work, and when it says it."""

from __future__ import annotations

import io
import time

import pytest

from runner.cli import progress as progress_module
from runner.cli.progress import Progress, _doing


def test_it_names_the_work_and_its_counts() -> None:
    said = _doing({"event": "env.resolve", "requirements": ["torch==2.13.0", "numpy"]}, None)
    assert said == "Resolving torch==2.13.0 numpy"
    said = _doing({"event": "env.build.start", "packages": 11, "env": "ab" * 32}, said)
    assert said == "Installing 11 packages"
    moved = {"event": "env.progress", "phase": "downloading", "downloads": 3}
    moved |= {"downloads_done": 1, "bytes_total": 300 * 2**20, "bytes_done": 100 * 2**20}
    said = _doing(moved, said)
    assert said == "Installing 11 packages: 1/3 downloaded, 100.0 MiB/300.0 MiB"
    assert (
        _doing({**moved, "phase": "installing"}, said)
        == "Installing 11 packages: downloaded, linking"
    )
    conda = {"event": "env.conda.progress", "done": 2, "packages": 5, "downloaded_bytes": 2048}
    assert _doing(conda, None) == "Installing conda packages: 2 of 5, 2.0 KiB downloaded"
    queued = {"event": "job.queued", "level": "info", "wants": {"gpu": 2}, "held_by": ["a"]}
    assert _doing({**queued, "ahead": 1}, None) == "Waiting for 2 GPUs: held by a; 1 job ahead"
    assert _doing({"event": "env.resolved", "packages": 3}, "Resolving x") == "Resolving x"
    for ended in ("env.build", "env.hit", "job.start", "job.end"):
        assert _doing({"event": ended}, "Installing") is None


def test_piped_it_writes_a_plain_line_every_few_seconds_while_the_work_lasts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_module, "PIPED_EVERY", 0.3)
    out = io.StringIO()
    shown = Progress(out, terminal=False)
    shown({"event": "env.build.start", "packages": 2})
    time.sleep(2.5)
    shown({"event": "env.build"})  # the work ended: no more lines
    time.sleep(1.5)
    shown.stop()
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 8, lines
    assert all(line.startswith("Installing 2 packages (") for line in lines)
    assert len(set(lines)) >= 2  # its time moves
    assert "\x1b" not in out.getvalue()


def test_nothing_without_a_stream() -> None:
    shown = Progress(None, terminal=False)
    shown({"event": "env.resolve", "requirements": ["numpy"]})
    assert shown._ticker is None
    shown.stop()
