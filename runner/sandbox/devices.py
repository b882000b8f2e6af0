"""The layers of the devices a node is given: its GPUs (device nodes and variables) and its
CPU cores (an affinity mask)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from runner.gpus import CONTROL_NODES
from runner.sandbox.layer import Host, Line, Place
from runner.sandbox.namespaces import unboxed
from runner.sandbox.policy import Gap, SandboxPolicy


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
            yield from unboxed(policy, host, "GPU isolation (every GPU's device node is open)")

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


class Cpus:
    """A node that asked for CPUs runs on cores of its own (`taskset`), in every mode, and each
    rank's thread pools are sized to its share (`OMP_NUM_THREADS`)."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return ()  # a job that asks for CPUs without taskset is refused before it is made

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if not place.cpus:
            return
        line.env["OMP_NUM_THREADS"] = str(max(1, len(place.cpus) // place.ranks))
        line.outer += ["taskset", "--cpu-list", ",".join(map(str, place.cpus))]


def _on_host(root: Path, node: str) -> Path | None:
    """Where a device node of the job's /dev is on the host; None if it is not there."""
    path = root / node.lstrip("/")
    return path if path.exists() else None
