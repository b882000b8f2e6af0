"""Child processes of a build that die with it.

uv and compileall run as children of the runner (or of an SDK backend's job
thread). If the runner is killed (`kill -9`), a child left running would go on
writing into a build folder that the next build wants to clear; so each child
asks the kernel for SIGKILL when its parent goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
from typing import Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _die_with(parent: int) -> None:  # runs in the child, between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was made: no signal comes
        os._exit(1)


def run(argv: list[str], *, check: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` whose child is killed when this process (thread) ends."""
    parent = os.getpid()
    return subprocess.run(argv, check=check, preexec_fn=lambda: _die_with(parent), **kwargs)
