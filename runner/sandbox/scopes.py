"""The scopes layer: a job's abstract Unix sockets and signals reach its own processes only
(Landlock, `landlock.py`), with or without bubblewrap."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from pathlib import Path

from runner.sandbox import landlock
from runner.sandbox.layer import INSTALL_BWRAP, Host, Line, Place
from runner.sandbox.policy import Gap, SandboxPolicy

LAUNCHER = Path(landlock.__file__)


@functools.cache
def abi() -> int:
    """The kernel's Landlock ABI, asked once per process."""
    return landlock.abi()


class Scopes:
    """No connection to the host's abstract Unix sockets (those of its network namespace,
    which a job with network on shares), and no signal to a process the job did not start
    (the user's others, where no pid namespace hides them)."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if policy.mode == "off" or abi() >= landlock.SCOPES_ABI:
            return
        cause = (
            f"this kernel's Landlock is ABI {abi()}; scopes need ABI 6 (Linux 6.12)"
            if abi()
            else "this kernel has no Landlock (Linux 6.12+, with landlock among its LSMs)"
        )
        if policy.network:
            fix = "run with --no-network (a network of its own), or on Linux 6.12+"
            yield Gap("the host's abstract Unix sockets (network on)", cause, fix)
        if host.bwrap is None:
            yield Gap("signals to the user's other processes", cause, INSTALL_BWRAP)

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if policy.mode != "off" and abi() >= landlock.SCOPES_ABI:
            line.outer += [sys.executable, "-I", "-S", str(LAUNCHER), "--"]
