"""One standby: an interpreter of an env, started in the sandbox of a job not yet submitted.

The next job like the last one (the same env, sandbox, kind of entry and start-up
variables) takes it, and with it the name its folder was made for: so every path
the job sees (work folder, HOME, TMPDIR, its cgroup) is the one a cold job of that
name would see. At hand-over the job's launch is computed as for a cold start and
compared (`launch_key`); a standby that does not match, or died, is dropped and
the job starts cold.
"""

from __future__ import annotations

import collections
import hashlib
import json
import marshal
import os
import re
import select
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runner import cgroup, launch
from runner.process import OnLine, Process, end_tree, tagged
from runner.spec import FunctionEntry, JobSpec
from runner.warm import priority

if TYPE_CHECKING:
    from runner.cgroup import JobCgroup
    from runner.store import JobStore

STARTUP = re.compile(
    r"^(PYTHON|LD_|OMP_|KMP_|GOMP_|MKL_|OPENBLAS_|NUMEXPR_|CUDA_|NVIDIA_|NCCL_|TORCH|PYTORCH_"
    r"|MALLOC_|GLIBC_TUNABLES$|LANG$|LANGUAGE$|LC_|TZ$|PATH$|HOME$|TMPDIR$|XDG_|HF_|VIRTUAL_ENV$)"
)
"""Variables read as an interpreter or a library starts: a standby starts with the job's
own values of these, and a job whose values differ never takes it."""


def startup(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if STARTUP.match(k)}


def submission_key(spec: JobSpec) -> str | None:
    """What a job's standby depends on, known when it is submitted; None: it has none (several
    nodes, torchrun's agent, a process limit held by an rlimit: those start cold)."""
    if spec.num_nodes != 1:
        return None
    if spec.framework == "torch" and not launch.direct(spec):
        return None
    policy = spec.sandbox
    if policy and policy.processes and policy.mode != "off" and not cgroup.available("pids"):
        return None  # RLIMIT_NPROC counts the user's processes as the job starts: never alike
    entry = spec.entry
    if isinstance(entry, FunctionEntry):
        what: object = "function"
    else:
        what = [entry.kind, entry.target if entry.kind == "script" else None, entry.cwd]
    data = spec.model_dump(mode="json", exclude={"name", "entry", "env", "timeout"})
    data |= {"entry": what, "env": startup(spec.env)}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def launch_key(
    prefix: Sequence[str],
    fds: Sequence[int],
    environ: Mapping[str, str],
    python: str,
    cpus: Sequence[int] = (),
) -> str:
    """What a step's start is made of, file descriptors' numbers and which CPU cores aside (a
    standby is pinned to its job's at hand-over): the sandbox's argv, the variables read at
    start-up and the interpreter."""
    numbers = {str(fd) for fd in fds}
    cores = ",".join(map(str, cpus)) if cpus else None
    argv = ["FD" if arg in numbers else "CPUS" if arg == cores else arg for arg in prefix]
    data = {"argv": argv, "env": startup(environ), "python": python}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def folder_id(path: Path) -> tuple[int, int] | None:
    """A folder's (device, inode): one removed and made again is another."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


class Relay:
    """A standby's output: its last lines kept (what it said before it ended) until its job
    takes it over."""

    def __init__(self) -> None:
        self.said: collections.deque[str] = collections.deque(maxlen=3)
        self.target: OnLine | None = None

    def __call__(self, stream: str, line: str, partial: bool) -> None:
        if self.target is None:
            self.said.append(line)
        else:
            self.target(stream, line, partial)


@dataclass
class Standby:
    """A started standby; `hand_over` gives it its job, `drop` ends it and what it held.

    It holds no lease on its env: `envs gc` may remove that env, and the standby is then
    dropped (by the pool within seconds, or at the latest when a job would take it)."""

    name: str
    tag: str
    launch: str
    python: str
    preloaded: tuple[str, ...]
    proc: Process
    relay: Relay
    control: int
    """The writing end of the pipe its job comes through (closed: it exits, jobless)."""
    ready_fd: int
    store: JobStore
    cgroup: JobCgroup | None = None
    ranks: int = 1
    """Interpreters it holds: one per rank of its node (`ranks.py` holds several)."""
    born: float = field(default_factory=time.monotonic)
    warmed: bool = False
    env_id: tuple[int, int] | None = None
    """The env folder it started in (device, inode): one removed and made again is another."""
    import_ms: dict[str, int] = field(default_factory=dict)
    """What each of its preloads took to import, in milliseconds (once it is ready)."""
    on_ready: Callable[[Standby], None] | None = None
    """Called once, when it has said it is ready."""

    def __post_init__(self) -> None:
        if self.env_id is None:
            self.env_id = folder_id(Path(self.python).parents[1])

    def ready(self) -> bool:
        """Its warm-up is done (it said so) and it still runs."""
        said = self.ready_fd >= 0 and select.select([self.ready_fd], [], [], 0)[0]
        if not self.warmed and said:
            told = os.read(self.ready_fd, 1 << 16)
            self.warmed = told[:1] == b"r"
            if self.warmed:  # what it imported: torch, then the preloads that imported
                for entry in told[1:].decode(errors="replace").split(","):
                    name, _, ms = entry.partition("=")
                    if name:
                        self.import_ms[name] = int(ms) if ms.isdigit() else 0
                torch = ("torch",) if "torch" in self.preloaded else ()
                self.preloaded = (*torch, *self.import_ms)
                if self.on_ready is not None:
                    self.on_ready(self)
            os.close(self.ready_fd)
            self.ready_fd = -1
        return self.warmed and self.proc.poll() is None

    @property
    def age(self) -> float:
        return time.monotonic() - self.born

    def rss(self) -> int:
        """Resident memory of its processes (the sandbox's and the interpreter's), in bytes."""
        total = 0
        for pid in tagged(self.tag):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            total += int(found[1]) * 1024 if found else 0
        return total

    def ended(self) -> str:
        """That it ended, with its code and the last thing it said."""
        said = f": {self.relay.said[-1]}" if self.relay.said else ""
        return f"the standby ended (code {self.proc.poll()}){said}"

    def mismatch(self, launch: str, python: str) -> str | None:
        """Why this standby cannot be the job whose start is `launch`; None: it can."""
        if self.proc.poll() is not None:
            return self.ended()
        if python != self.python:
            return "the job's interpreter is not the standby's"
        if not Path(python).exists() or folder_id(Path(python).parents[1]) != self.env_id:
            return "the standby's env was removed"
        if launch != self.launch:
            return "the job's sandbox or start-up variables differ from the standby's"
        return None

    def hand_over(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        out: OnLine,
        cpus: Sequence[int] = (),
    ) -> None:
        """Give it its job: from now on it is the job's first process, its lines the job's;
        before its first line, it has a cold job's IO priority and its CPU cores (if any)."""
        self.relay.target = out
        pids = tagged(self.tag)
        priority.restore(pids)
        if cpus:
            priority.pin(pids, cpus)
        message = marshal.dumps({"argv": list(argv), "env": dict(env), "cwd": str(cwd)}, 4)
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(self.control, view) :]
        finally:
            os.close(self.control)
            self.control = -1

    def drop(self, grace: float = 1.0) -> None:
        """End it, jobless, and give back what it holds: its cgroup, its folder, its lease."""
        if self.control >= 0:
            os.close(self.control)  # it exits at once when warm; a warming one is ended
            self.control = -1
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        if self.proc.wait(timeout=0.2) is None:
            end_tree(self.tag, grace)
            self.proc.wait(timeout=grace + 5)
        if self.cgroup is not None:
            self.cgroup.remove()
        self.store.unreserve(self.name)
