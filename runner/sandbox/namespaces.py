"""The layers made of bubblewrap's namespaces and flags: devices, lifetime (pid namespace),
network, IPC and hostname, capabilities."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from runner.gpus import CONTROL_NODES
from runner.sandbox.layer import INSTALL_BWRAP, Host, Line, Place
from runner.sandbox.policy import Gap, SandboxPolicy

NS_GET_USERNS = 0xB701
"""ioctl on a namespace file: a file descriptor of the user namespace that owns it."""


def _unboxed(policy: SandboxPolicy, host: Host, layer: str) -> Iterable[Gap]:
    """The gap of a layer that only bubblewrap gives, where there is none."""
    if policy.mode != "off" and host.bwrap is None:
        yield Gap(layer, host.problem or "bubblewrap not found", INSTALL_BWRAP)


class Devices:
    """A minimal /dev of the job's own (null, zero, random, tty, a private /dev/shm), with the
    nodes of the node's own GPUs and the driver's control nodes, and no other GPU's.

    The job is told its GPUs by UUID (`CUDA_VISIBLE_DEVICES`), which names the same
    GPUs in any numbering; a job without GPUs gets `CUDA_VISIBLE_DEVICES=""`, as a
    pod without a GPU request does. Nodes of one job meet as hosts do (`NCCL_HOSTID`
    of their own: over sockets, not each other's /dev/shm), over loopback without network.
    """

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if host.gpu_nodes:
            yield from _unboxed(policy, host, "GPU isolation (every GPU's device node is open)")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        uuids = ",".join(gpu.uuid for gpu in place.gpus)
        line.env["CUDA_VISIBLE_DEVICES"] = uuids
        line.env["NVIDIA_VISIBLE_DEVICES"] = uuids or "void"
        if place.gpus:
            line.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            if place.host_id:
                line.env["NCCL_HOSTID"] = place.host_id
            if not policy.network:
                line.env["NCCL_SOCKET_IFNAME"] = "lo"
        if not line.boxed:
            return
        line.inner += ["--dev", "/dev"]
        nodes = [gpu.node for gpu in place.gpus] + list(CONTROL_NODES if place.gpus else ())
        for node in nodes:
            host_path = _on_host(place.device_root, node)
            if host_path is not None:
                line.inner += ["--dev-bind", str(host_path), node]


class Lifetime:
    """The job dies with the runner: bubblewrap's pid namespace and `--die-with-parent`.

    Without bubblewrap, and with the sandbox off, only the first process is tied
    (`setpriv --pdeathsig`): torchrun takes TERM as its cue to end its workers, a
    plain python is killed, and what it started itself is left to `runner jobs --reap`.
    """

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return _unboxed(
            policy, host, "dying with the runner (only the first process is tied to it)"
        )

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += ["--proc", "/proc", "--unshare-pid", "--die-with-parent"]
            if place.report_fd is not None:
                line.inner += ["--info-fd", str(place.report_fd)]
        elif shutil.which("setpriv"):
            line.outer += ["setpriv", f"--pdeathsig={'TERM' if place.torch else 'KILL'}", "--"]


class Network:
    """`network: false`: a network namespace with loopback only, one for all nodes of a job.

    Later nodes enter node-0's namespace with `nsenter`. For an ordinary user
    that namespace belongs to node-0's user namespace: the step enters that
    first (its owner may), then makes a user namespace of its own inside it
    with the user's own ids, so nothing runs as the namespace's root.
    """

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return () if policy.network else _unboxed(policy, host, "network isolation")

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


def _on_host(root: Path, node: str) -> Path | None:
    """Where a device node of the job's /dev is on the host; None if it is not there."""
    path = root / node.lstrip("/")
    return path if path.exists() else None


def _ns_id(path: str) -> tuple[int, int]:
    st = Path(path).stat()
    return st.st_dev, st.st_ino


class Ipc:
    """Private System V IPC and hostname: no shared memory segments or semaphores of the host."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return _unboxed(policy, host, "private IPC and hostname")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += ["--unshare-ipc", "--unshare-uts"]


class Capabilities:
    """No capabilities, even when the runner is root; no new privileges (bubblewrap always
    sets `no_new_privs`, so set-uid programs do not raise them either)."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if host.root:
            yield from _unboxed(policy, host, "dropping root's capabilities")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if line.boxed:
            line.inner += ["--cap-drop", "ALL"]
