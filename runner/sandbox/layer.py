"""The shape every sandbox layer has, and what the layers read (`Host`, `Place`) and write (`Line`).

A layer is one small unit: `gaps` says what of it this machine and user cannot
enforce (and how to fix that), `add` puts its part on the command line and in
the job's environment. `check` and `confine` read the same list of layers, so
what is reported as enforced is what the command line does.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from runner.cgroup import JobCgroup
from runner.gpus import Gpu
from runner.outcome import Cause
from runner.sandbox.policy import Gap, SandboxPolicy

if TYPE_CHECKING:
    from runner.sandbox.identity import Identity

INSTALL_BWRAP = "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap)"


@functools.cache
def bwrap_problem(bwrap: str | None) -> str | None:
    """Why bubblewrap cannot confine a job here (None: it can), tried once per process.

    Present is not enough: where unprivileged user namespaces are disabled
    (a sysctl, or an AppArmor policy), bwrap exists and fails at once.
    """
    if bwrap is None or shutil.which(bwrap) is None:
        return f"bubblewrap not found ({bwrap or 'bwrap'})"
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--unshare-net", "--die-with-parent"]
    probe += ["--unshare-ipc", "--unshare-uts", "--cap-drop", "ALL"]
    try:
        subprocess.run([*probe, "true"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        said = getattr(exc, "stderr", b"") or b""
        return f"bubblewrap cannot run here: {said.decode(errors='replace').strip() or exc}"
    return None


@dataclass(frozen=True)
class Host:
    """What this machine and user can give a job."""

    bwrap: str | None
    """A bubblewrap that runs here; None where there is none (see `problem`)."""
    problem: str | None
    root: bool
    gpu_nodes: bool = False
    """The host has GPU device nodes (which only bubblewrap can keep from a job)."""

    @classmethod
    def probe(cls, bwrap: str | None) -> Host:
        problem = bwrap_problem(bwrap)
        return cls(
            bwrap=None if problem else bwrap,
            problem=problem,
            root=os.geteuid() == 0,
            gpu_nodes=any(Path("/dev").glob("nvidia[0-9]*")),
        )


@dataclass(frozen=True)
class Place:
    """Where one step of a job runs: the folders and handles its layers need."""

    jobdir: Path
    workdir: Path
    tmpdir: Path
    home: Path
    """The job's private HOME (writable)."""
    env_dirs: tuple[Path, ...] = ()
    """The job's env and its base interpreter: read-only, even inside the hidden cache."""
    shared: tuple[Path, ...] = ()
    """The user's paths the job reads: its script and the script's folder, the cwd of `-m`."""
    hidden: tuple[Path, ...] = ()
    """The runner's own folders (state dir, cache), never the job's to see."""
    data_cache: Path | None = None
    join: int | None = None
    """node-0's sandbox pid: later nodes of a job without network join its namespace."""
    report_fd: int | None = None
    """bubblewrap writes its namespaces there (node-0 of a job with several, no network)."""
    cgroups: JobCgroup | None = None
    gpus: tuple[Gpu, ...] = ()
    """The GPUs of this node: their device nodes are the only ones it sees."""
    cpus: tuple[int, ...] = ()
    """The CPU cores of this node: its processes run on these only."""
    ranks: int = 1
    """Processes per node that share the cores (OMP_NUM_THREADS is set per rank)."""
    device_root: Path = Path("/")
    """Where the device nodes are on the host (`/`; elsewhere in tests)."""
    host_id: str | None = None
    """This node's own name for NCCL (`NCCL_HOSTID`): nodes meet over sockets, as hosts do."""
    grace: float = 5.0
    """Seconds between TERM and KILL when the job ends (`RUNNER_CANCEL_GRACE`)."""
    user: Identity | None = None
    """Who the job runs as, where that is not the runner's user (root's jobs)."""


@dataclass
class Line:
    """One step's command line as the layers build it, with what else it needs."""

    boxed: bool
    """bubblewrap runs this step (`inner` becomes its options)."""
    outer: list[str] = field(default_factory=list)
    """Wrappers run before bubblewrap (or instead of it): cgroups, rlimits, namespaces."""
    inner: list[str] = field(default_factory=list)
    inside: list[str] = field(default_factory=list)
    """Wrappers run inside bubblewrap, before the job (the job's identity)."""
    env: dict[str, str] = field(default_factory=dict)
    fds: list[int] = field(default_factory=list)
    """File descriptors the step inherits; the caller closes them once it has started."""
    notes: list[str] = field(default_factory=list)


class Layer(Protocol):
    """One layer of the sandbox."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        """What of this layer, as `policy` asks it, `host` cannot enforce."""
        ...

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        """Put this layer's part on `line` (called in the layers' order, for every mode)."""
        ...


SETUP_FAILED = 125
"""The exit code of a layer's wrapper that could not set its part up (a cgroup to enter, a
Landlock scope): the node ends before the job runs (`cgroup.ENTER_FAILED`, `landlock.FAILED`)."""

SETUP_SIGN = re.compile(r"^sandbox-runner: cannot ")
"""The line such a wrapper prints first, on the node's stderr."""


@dataclass(frozen=True)
class Exit:
    """How one node's first process ended, with what its layers can read of why."""

    code: int | None
    signs: frozenset[str] = frozenset()
    """The layers' signs (`Explains.SIGNS`) its stderr showed."""
    cgroup: JobCgroup | None = None
    """The node's cgroup, not yet removed: the kernel's counters of its limits."""


@runtime_checkable
class Explains(Protocol):
    """A layer that can end a node itself (a limit, a wrapper that failed) and say so."""

    SIGNS: ClassVar[dict[str, re.Pattern[str]]]
    """Lines of a node's stderr that say this layer refused something, by name."""

    def explain(self, policy: SandboxPolicy, exit: Exit) -> tuple[Cause, str] | None:
        """Why the node ended, where this layer ended it: the cause (a limit; a sandbox not
        set up), and words that follow "exited with code N: "."""
        ...
