"""Child processes of a build that die with it.

uv and compileall run as children of the runner (or of an SDK backend's job
thread). If the runner is killed (`kill -9`), a child left running would go on
writing into a build folder that the next build wants to clear; so each child
asks the kernel for SIGKILL when its parent goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import signal
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with(parent: int) -> None:  # runs in the child, between fork and exec
    """Killed when `parent` goes; and what it writes (an env's files) readable by others,
    whatever the caller's umask: root's jobs run as another user, who must read the env.
    The cache's own folder (the caller's umask) still decides who can reach it."""
    os.umask(0o022)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was made: no signal comes
        os._exit(1)


def run(argv: list[str], *, check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` whose child is killed when this process (thread) ends."""
    parent = os.getpid()
    return subprocess.run(argv, check=check, preexec_fn=lambda: _die_with(parent), **kwargs)


LOOK_EVERY = 0.5
"""Seconds between two looks at what a streamed child has received."""


def stream(
    argv: list[str],
    on_line: Callable[[str], None],
    on_received: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """`run`, with each line of the child's stderr given to `on_line` as it comes (uv says
    what it downloads there), and every `LOOK_EVERY` s the bytes it has received over the
    network so far given to `on_received` (`envs.received`: uv says nothing of a download
    until it is in, when its stderr is not a terminal). stdout and stderr are kept whole
    all the same."""
    import threading

    parent = os.getpid()
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: _die_with(parent),  # noqa: PLW1509 (prctl and getppid only, as in run)
        **kwargs,
    ) as proc:
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(stdout.read()), daemon=True)
        reader.start()
        ended = threading.Event()
        watcher = None
        if on_received is not None:
            watch = functools.partial(_watch, proc.pid, on_received, ended)
            watcher = threading.Thread(target=watch, name="child-received", daemon=True)
            watcher.start()
        err = []
        try:
            for text in stderr:
                err.append(text)
                on_line(text.rstrip("\n"))
        finally:
            ended.set()
            if watcher is not None:
                watcher.join()
        reader.join()
        code = proc.wait()
    return subprocess.CompletedProcess(argv, code, "".join(out), "".join(err))


def _watch(pid: int, on_received: Callable[[int], None], ended: threading.Event) -> None:
    from envs.received import Received

    received = Received(pid)
    try:
        while not ended.wait(LOOK_EVERY):
            total = received.total()
            if total is None:
                return  # not to be seen here: downloads count as each one ends
            on_received(total)
    finally:
        received.close()
