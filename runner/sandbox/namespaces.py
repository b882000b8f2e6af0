"""The layers made of bubblewrap's namespaces and flags: lifetime (pid namespace), network,
IPC and hostname, capabilities."""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from runner.process import TAG
from runner.sandbox.layer import INSTALL_BWRAP, Host, Line, Place
from runner.sandbox.policy import Gap, SandboxPolicy

ORPHANS = Path(__file__).with_name("orphans.py")

NS_GET_USERNS = 0xB701
"""ioctl on a namespace file: a file descriptor of the user namespace that owns it."""


def unboxed(policy: SandboxPolicy, host: Host, layer: str) -> Iterable[Gap]:
    """The gap of a layer that only bubblewrap gives, where there is none."""
    if policy.mode != "off" and host.bwrap is None:
        yield Gap(layer, host.problem or "bubblewrap not found", INSTALL_BWRAP)


class Lifetime:
    """The job dies with the runner: bubblewrap's pid namespace and `--die-with-parent`.

    Without bubblewrap, and with the sandbox off, the first process is tied to the
    runner (`setpriv --pdeathsig=TERM`) and is `orphans.py`, which then ends every
    process that carries the job's tag: TERM, and KILL after the grace
    (`RUNNER_CANCEL_GRACE`). One that dropped its tag is left to `runner jobs --reap`.
    """

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return unboxed(policy, host, "dying with the runner (only the first process is tied to it)")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += ["--proc", "/proc", "--unshare-pid", "--die-with-parent"]
            if place.report_fd is not None:
                line.inner += ["--info-fd", str(place.report_fd)]
        elif shutil.which("setpriv"):
            line.outer += ["setpriv", "--pdeathsig=TERM", "--", sys.executable, "-I", "-S"]
            line.outer += [str(ORPHANS), f"{place.grace:g}", TAG, "--"]


class Network:
    """`network: false`: a network namespace with loopback only, one for all nodes of a job.

    Later nodes enter node-0's namespace with `nsenter`. For an ordinary user
    that namespace belongs to node-0's user namespace: the step enters that
    first (its owner may), then makes a user namespace of its own inside it
    with the user's own ids, so nothing runs as the namespace's root.
    """

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return () if policy.network else unboxed(policy, host, "network isolation")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if not line.boxed or policy.network:
            return
        if place.join is None:
            line.inner.append("--unshare-net")
            return
        net = os.open(f"/proc/{place.join}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        line.fds.append(net)
        owner: int = fcntl.ioctl(net, NS_GET_USERNS)
        line.fds.append(owner)
        enter = ["nsenter", f"--net=/proc/self/fd/{net}"]
        if _ns_id(f"/proc/self/fd/{owner}") != _ns_id("/proc/self/ns/user"):
            enter += [f"--user=/proc/self/fd/{owner}", "--preserve-credentials"]
            line.inner += ["--unshare-user", "--uid", str(os.getuid()), "--gid", str(os.getgid())]
        line.outer += [*enter, "--"]


def _ns_id(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_dev, st.st_ino


class Ipc:
    """Private System V IPC and hostname: no shared memory segments or semaphores of the host."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return unboxed(policy, host, "private IPC and hostname")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += ["--unshare-ipc", "--unshare-uts"]


class Capabilities:
    """No capabilities, even when the runner is root; no new privileges (bubblewrap always
    sets `no_new_privs`, so set-uid programs do not raise them either)."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if host.root:
            yield from unboxed(policy, host, "dropping root's capabilities")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += ["--cap-drop", "ALL"]
