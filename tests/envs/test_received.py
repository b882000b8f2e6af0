"""What a child receives over the network, seen from its parent (`envs.received`), and uv's
counts made of it (`envs.progress.UvProgress`): a build's bytes as they come."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from envs.progress import UvProgress
from envs.received import Received

CHILD = """
import socket, sys
for _ in range(2):  # two connections, one after the other, each read to its end
    with socket.create_connection(("127.0.0.1", int(sys.argv[1]))) as sock:
        while sock.recv(65536):
            pass
sys.stdin.read()  # then it waits, its connections closed, until the test ends it
"""


def _until(what: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


@pytest.mark.parametrize("wrapped", [False, True], ids=["itself", "under-a-wrapper-script"])
def test_it_counts_what_a_child_receives_and_keeps_a_closed_connections_count(
    wrapped: bool, tmp_path: Path
) -> None:
    (tmp_path / "child.py").write_text(CHILD)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        argv = [sys.executable, str(tmp_path / "child.py"), str(port)]
        if wrapped:  # a shell that waits for it (`; exit $?`: no exec of the last command)
            argv = ["sh", "-c", '"$0" "$@"; exit $?', *argv]
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, text=True)
        received = Received(child.pid)
        try:
            assert received.total() == 0  # no connection yet
            first, _ = listener.accept()
            first.sendall(b"x" * 200_000)
            _until(lambda: (received.total() or 0) >= 200_000)
            assert received.total() in (200_000, 200_001)  # its FIN counts as one
            first.close()
            second, _ = listener.accept()  # the child closed the first one: its count stays
            second.sendall(b"y" * 300_000)
            _until(lambda: (received.total() or 0) >= 500_000)
            second.close()
            _until(lambda: len(received.seen) == 2 and _closed(child.pid))
            assert 500_000 <= (received.total() or 0) <= 500_002  # both closed, both counted
        finally:
            received.close()
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=30)
    assert Received(child.pid).total() is None  # gone: nothing to see, said as None


def _closed(pid: int) -> bool:
    """Whether the process tree of `pid` holds no TCP socket any more."""
    tree = Received(pid)
    try:
        return tree.total() is not None and not tree.seen
    finally:
        tree.close()


class Records:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.seen.append({"event": event, **fields})


def test_a_downloads_bytes_are_what_uv_received_since_it_began_never_more_than_its_size() -> None:
    log = Records()
    progress = UvProgress(log, packages=2)  # type: ignore[arg-type]
    progress.received(5_000)  # resolving: metadata, before any download
    assert log.seen == []
    progress("Downloading big-pkg (2.0MiB)")
    assert log.seen[-1]["bytes_done"] == 0 and log.seen[-1]["bytes_total"] == 2 * 2**20
    progress.received(5_000 + 2**20)
    assert log.seen[-1]["bytes_done"] == 2**20 and log.seen[-1]["downloads_done"] == 0
    said = len(log.seen)
    progress.received(5_000 + 2**20)
    assert len(log.seen) == said  # nothing moved: no record
    progress.received(5_000 + 3 * 2**20)  # more than announced (headers, a small wheel)
    assert log.seen[-1]["bytes_done"] == 2 * 2**20
    progress(" Downloaded big-pkg")
    assert log.seen[-1]["downloads_done"] == 1 and log.seen[-1]["bytes_done"] == 2 * 2**20
    progress("Prepared 2 packages in 1.2s")
    assert log.seen[-1]["phase"] == "installing"
    progress.received(10 * 2**20)
    assert log.seen[-1]["phase"] == "installing" and len(log.seen) == said + 3  # no more


def test_without_a_look_at_its_connections_a_download_counts_when_it_ends() -> None:
    log = Records()
    progress = UvProgress(log, packages=1)  # type: ignore[arg-type]
    progress("Downloading big-pkg (1.0MiB)")
    progress(" Downloaded big-pkg")
    assert [r["bytes_done"] for r in log.seen] == [0, 2**20]
