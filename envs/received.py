"""What a child process has received over the network so far: uv's downloads, as they come.

uv shows a download's bytes only in its progress bars, which it draws only on a
terminal; the runner reads uv's stderr through a pipe. So `Received` looks at the
child's TCP connections itself: it copies each socket's descriptor from the child
(`pidfd_getfd`, allowed to a parent over its own child) and reads the kernel's
count of the bytes that arrived on it (`tcpi_bytes_received` of `TCP_INFO`). A
connection that closes keeps the count last seen; one opened and closed between two
looks is not seen (its download counts when uv says it is in). Where the kernel refuses any of
it (no `pidfd_getfd` before Linux 5.6, a ptrace policy), `total` is None and the
build shows downloads only as each one ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
from pathlib import Path

_SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux has
_BYTES_RECEIVED = struct.Struct("=Q")
_BYTES_RECEIVED_AT = 128  # tcpi_bytes_received's offset in struct tcp_info (linux/tcp.h)
_TCP_INFO_SIZE = _BYTES_RECEIVED_AT + _BYTES_RECEIVED.size
_libc = ctypes.CDLL(None, use_errno=True)


class Received:
    """The bytes received on the TCP connections of process `pid` (a child of this one) and
    of its own children (uv run through a wrapper script)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfds: dict[int, int] = {}
        self.seen: dict[str, int] = {}
        """Bytes received per socket (by inode), as last seen: a closed one keeps its count."""

    def total(self) -> int | None:
        """All bytes received so far; None where they cannot be seen."""
        refused = False
        for pid in self._tree():
            pidfd = self._pidfd(pid)
            if pidfd is None:
                continue
            try:
                entries = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue  # it ended meanwhile
            for entry in entries:
                try:
                    target = str(entry.readlink())
                except OSError:
                    continue  # closed meanwhile
                if not target.startswith("socket:"):
                    continue
                count = _received(pidfd, int(entry.name))
                if count is None:
                    refused = True
                elif count >= self.seen.get(target, 0):
                    self.seen[target] = count
        if not self.pidfds or (refused and not self.seen):
            return None  # gone, or not ours to see
        return sum(self.seen.values())

    def _tree(self) -> list[int]:
        """`pid` and its descendants, as the kernel lists each task's children."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError, ValueError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(child) for child in (task / "children").read_text().split()]
        return found

    def _pidfd(self, pid: int) -> int | None:
        if pid not in self.pidfds:
            try:
                self.pidfds[pid] = os.pidfd_open(pid)
            except OSError:
                return None
        return self.pidfds[pid]

    def close(self) -> None:
        for pidfd in self.pidfds.values():
            os.close(pidfd)
        self.pidfds.clear()


def _received(pidfd: int, fd: int) -> int | None:
    """Bytes received on descriptor `fd` of the process of `pidfd` (0: a socket that is not
    TCP, or one closed meanwhile); None where the kernel does not let us see it."""
    ours = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    if ours < 0:
        return None if ctypes.get_errno() in (1, 38) else 0  # EPERM, ENOSYS; EBADF: gone
    try:
        sock = socket.socket(fileno=ours)
    except OSError:  # its number was closed and taken by a file meanwhile
        os.close(ours)
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return 0  # a Unix socket, a UDP one: nothing of a download
    finally:
        sock.close()  # our copy only: the child's socket is as it was
    if len(info) < _TCP_INFO_SIZE:
        return 0  # a kernel before 4.1: no such count
    count: int = _BYTES_RECEIVED.unpack_from(info, _BYTES_RECEIVED_AT)[0]
    return count
