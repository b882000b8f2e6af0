"""The low layer against real, misbehaving processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.process import MAX_LINE, Process, is_same_process, start_ticks
from tests.runner.conftest import JOBS


def alive(pid: int) -> bool:
    """Running and not a zombie, read from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_lines_are_pumped_per_stream(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_line(stream: str, line: str, _partial: bool) -> None:
        with lock:
            lines.append((stream, line))

    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"
    proc = Process(
        [sys.executable, "-c", code], env=os.environ, cwd=tmp_path, on_line=on_line, tag="t-lines"
    )
    assert proc.wait() == 4
    assert sorted(lines) == [("stderr", "err"), ("stdout", "out")]


def test_very_long_lines_are_split_not_buffered_whole(tmp_path: Path) -> None:
    pieces: list[tuple[int, bool]] = []
    code = f"print('a' * {MAX_LINE * 3 + 10}); print('short')"
    proc = Process(
        [sys.executable, "-c", code],
        env=os.environ,
        cwd=tmp_path,
        on_line=lambda _s, line, partial: pieces.append((len(line), partial)),
        tag="t-long",
    )
    assert proc.wait() == 0
    # every piece but the last of a long line says it goes on; a whole line does not
    assert pieces == [(MAX_LINE, True), (MAX_LINE, True), (MAX_LINE, True), (10, False), (5, False)]


def test_end_kills_a_tree_that_ignores_sigterm(tmp_path: Path) -> None:
    pids: list[int] = []
    proc = Process(
        [sys.executable, str(JOBS / "ignore_term.py")],
        env=os.environ,
        cwd=tmp_path,
        on_line=lambda _s, line, _p: pids.extend(int(p) for p in line.split()[1:]),
        tag="t-ignore-term",
    )
    wait_for(lambda: len(pids) == 2)
    assert all(alive(p) for p in pids)
    assert os.getpgid(pids[1]) == proc.pgid != os.getpgid(0)  # its own group
    started = time.monotonic()
    proc.end(grace=0.5)
    assert time.monotonic() - started < 10
    wait_for(lambda: not any(alive(p) for p in pids))


def test_leader_exit_takes_its_strays_with_it(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(c.pid, flush=True)"
    )
    pids: list[int] = []
    proc = Process(
        [sys.executable, "-c", code],
        env=os.environ,
        cwd=tmp_path,
        on_line=lambda _s, line, _p: pids.append(int(line)),
        tag="t-strays",
    )
    assert proc.wait(timeout=30) == 0
    wait_for(lambda: not alive(pids[0]))


def test_process_identity_survives_only_with_the_same_start_time() -> None:
    ticks = start_ticks(os.getpid())
    assert is_same_process(os.getpid(), ticks)
    assert ticks is not None and not is_same_process(os.getpid(), ticks + 1)
    assert not is_same_process(2**22 + 12345, ticks)


def test_a_zombie_is_not_the_process_it_was() -> None:
    """A dead runner whose parent has not waited for it (a container's init may never do
    so) is gone: its job must read as ownerless, not as running."""
    child = subprocess.Popen(["sleep", "60"])
    ticks = start_ticks(child.pid)
    assert is_same_process(child.pid, ticks)
    child.kill()
    wait_for(lambda: not alive(child.pid))  # a zombie now: /proc still has it
    assert start_ticks(child.pid) == ticks
    assert not is_same_process(child.pid, ticks)
    child.wait()


def test_a_line_not_yet_ended_is_handed_on_after_a_while_and_a_split_character_kept(
    tmp_path: Path,
) -> None:
    """A progress bar (`\\r`, no newline until the epoch ends) shows while it moves."""
    pieces: list[tuple[str, bool]] = []
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "out = sys.stdout.buffer\n"
        "out.write('step 1 é'.encode()[:-1]); out.flush()\n"  # cut inside the é
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "out.write(b'\\xa9 step 2\\nno newline at the end'); out.flush()\n"
    )
    proc = Process(
        [sys.executable, "-c", code],
        env=os.environ,
        cwd=tmp_path,
        on_line=lambda _s, line, partial: pieces.append((line, partial)),
        tag="t-progress",
    )
    wait_for(lambda: bool(pieces), timeout=10)  # only the wait can hand it on: the job waits
    assert pieces == [("step 1 ", True)]
    go.touch()
    assert proc.wait() == 0
    assert pieces == [("step 1 ", True), ("é step 2", False), ("no newline at the end", False)]


def test_output_is_read_when_the_runner_holds_many_files(tmp_path: Path) -> None:
    """An SDK backend in a busy Python (a notebook with many sockets and files) gets pipes
    numbered past 1024, which select() cannot watch."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this machine allows {hard} open files; the case needs over 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        lines: list[str] = []
        proc = Process(
            [sys.executable, "-c", "print('read', flush=True)"],
            env=os.environ,
            cwd=tmp_path,
            on_line=lambda _s, line, _p: lines.append(line),
            tag="t-many-fds",
        )
        assert proc.wait() == 0
        assert lines == ["read"]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
