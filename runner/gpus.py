"""The machine's GPUs, read from the NVIDIA driver's own files, and the pool jobs draw from.

The driver lists each GPU under `/proc/driver/nvidia/gpus/<bus id>/information`
(`Model`, `GPU UUID`, `Bus Location`, `Device Minor`: the N of `/dev/nvidiaN`).
GPUs are numbered in PCI bus order, as `nvidia-smi` numbers them; jobs are told
their GPUs by UUID, which means the same thing in any numbering. Memory comes
from NVML (`nvidia-ml-py`) where it is installed; nothing else needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.errors import InvalidJobError

CONTROL_NODES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
    "/dev/nvidia-caps",
)
"""Device nodes every CUDA process needs, whichever GPUs it uses (those that exist)."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    bus: str
    minor: int
    memory_bytes: int | None = None

    def is_named(self, name: str) -> bool:
        """Whether `name` (an index, as `runner gpus` shows it, or the UUID) is this GPU."""
        return name in (str(self.index), self.uuid)

    @property
    def node(self) -> str:
        """Its device node, as the job sees it."""
        return f"/dev/nvidia{self.minor}"


def _fields(path: Path) -> dict[str, str]:
    fields = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def scan(root: Path = Path("/")) -> list[Gpu]:
    """Every NVIDIA GPU the driver lists under `root` (an empty list without a driver)."""
    folder = root / "proc" / "driver" / "nvidia" / "gpus"
    found: list[Gpu] = []
    for bus in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            info = _fields(bus / "information")
            found.append(
                Gpu(
                    index=len(found),
                    uuid=info["GPU UUID"],
                    name=info.get("Model", "NVIDIA GPU"),
                    bus=info.get("Bus Location", bus.name),
                    minor=int(info["Device Minor"]),
                )
            )
        except (OSError, KeyError, ValueError):
            continue  # a GPU the driver does not describe fully is not one a job can get
    return _with_memory(found) if root == Path("/") else found


def _with_memory(gpus: list[Gpu]) -> list[Gpu]:
    """Each GPU's memory, from NVML where it is installed."""
    if not gpus:
        return gpus
    try:
        import pynvml  # type: ignore[import-not-found]  # nvidia-ml-py, optional
    except ImportError:
        return gpus
    memory = {}
    with contextlib.suppress(Exception):  # NVML's own errors: the memory stays unknown
        pynvml.nvmlInit()
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                memory[pynvml.nvmlDeviceGetUUID(handle)] = pynvml.nvmlDeviceGetMemoryInfo(
                    handle
                ).total
        finally:
            pynvml.nvmlShutdown()
    return [
        Gpu(g.index, g.uuid, g.name, g.bus, g.minor, memory.get(g.uuid, g.memory_bytes))
        for g in gpus
    ]


def _select(gpus: list[Gpu], value: str, source: str) -> list[Gpu]:
    """The GPUs a list of indices or UUIDs names (`all`, `none`, `""` too)."""
    value = value.strip()
    if value in ("all", ""):
        return gpus if value == "all" else []
    if value in ("none", "void", "NoDevFiles"):
        return []
    chosen = []
    for item in (part.strip() for part in value.split(",") if part.strip()):
        match = [g for g in gpus if g.is_named(item)]
        if not match:
            raise InvalidJobError(
                f"{source} names GPU {item!r}, which this machine does not have "
                f"(it has {len(gpus)}: {', '.join(str(g.index) for g in gpus) or 'none'})"
            )
        chosen += [g for g in match if g not in chosen]
    return chosen


def pool(gpus: list[Gpu], setting: str, caller: Mapping[str, str]) -> list[Gpu]:
    """The GPUs jobs may get: `RUNNER_GPUS`, within what the caller's own CUDA_VISIBLE_DEVICES
    or NVIDIA_VISIBLE_DEVICES lets it see."""
    chosen = _select(gpus, setting, "RUNNER_GPUS")
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        if name in caller:
            visible = _select(gpus, caller[name], name)
            chosen = [g for g in chosen if g in visible]
    return chosen


def request(value: str, pool_size: int) -> int | tuple[str, ...]:
    """`--gpus N|all|0,2`: a count per node, or the GPUs named (indices or UUIDs)."""
    value = value.strip()
    if value == "all":
        return pool_size
    if value.isdigit():
        return int(value)
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    if not names:
        raise InvalidJobError(f"--gpus {value!r}: give a count, 'all', or indices such as 0,2")
    return names
