"""A cgroup for each node of a job, where this machine lets the runner make one.

A cgroup limits what rlimits cannot: the memory a whole process tree really
uses (not its address space, which torch alone reserves by the gigabyte) and
the number of its processes (RLIMIT_NPROC counts per user, and never applies
to root). The runner makes a child of its own cgroup (cgroup v1 `memory` and
`pids` hierarchies, or v2 where its cgroup is its to manage: root's, or one
delegated to its user), and the job's first process moves itself in before it
runs anything, so every process of the node is counted. Where no cgroup can be
made, the caller falls back to rlimits.

On v2 a cgroup that hands controllers to its children may hold no process
itself (the root cgroup excepted). A runner started alone in a delegated
cgroup (`systemd-run --user --scope -p Delegate=yes runner ...`, a container's
own cgroup) first moves itself into a leaf of its own, `...-runner`, as
systemd asks of the programs it delegates to; it never moves other processes.
Where its cgroup is shared with others (a login session's scope, a terminal's),
an ordinary user's runner asks the user's systemd for a delegated scope of its
own, `sandbox-runner-PID.T.scope`, and moves there: what `systemd-run --user
--scope -p Delegate=yes` does for a new process, done for the runner itself.
Without a systemd user manager on the user's bus it gets rlimits (and is told
so); root makes the job cgroups under `/sys/fs/cgroup/sandbox-runner`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from runner.process import is_same_process, start_ticks

ROOT = Path("/sys/fs/cgroup")
PREFIX = "sandbox-runner-"
TOP = "sandbox-runner"
"""v2, root only: the top-level cgroup of job cgroups when the runner's own is shared."""
RUNNER_LEAF = "-runner"
"""The end of the name of the v2 leaf a runner moves itself into."""
STALE_AFTER = 60.0
"""Seconds after which an empty job cgroup left by a killed runner is removed."""

ENTER_FAILED = 125
ENTER = (
    'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f" || {'
    ' echo "sandbox-runner: cannot enter the cgroup $f: the limit would not apply" >&2;'
    f' exit {ENTER_FAILED}; }}; shift; done; shift; exec "$@"'
)
"""`sh -c ENTER sh PROCS... -- ARGV`: move this shell into each cgroup, then become ARGV.

A move that fails ends the node before ARGV runs: a limit asked for applies or
the job does not run."""


def unified() -> bool:
    """Whether this machine runs cgroup v2 alone (the unified hierarchy)."""
    return (ROOT / "cgroup.controllers").exists()


def _memberships() -> dict[str, str]:
    """This process's cgroups, as /proc/self/cgroup names them: a hierarchy's controllers
    (v1, comma-joined; "" for the unified hierarchy) to the path in it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return {}
    return {names: path for _id, names, path in (line.split(":", 2) for line in lines)}


def _own_path(controller: str) -> Path | None:
    """The cgroup this runner makes children of: its own, holding `controller` (v1), or
    its v2 cgroup (the one above, once the runner moved itself into its leaf)."""
    memberships = _memberships()
    if unified():
        if "" not in memberships:
            return None
        own = ROOT / memberships[""].lstrip("/")
        leaf = own.name.startswith(PREFIX) and own.name.endswith(RUNNER_LEAF)
        return own.parent if leaf else own
    for names, path in memberships.items():
        if controller in names.split(","):
            return ROOT / names / path.lstrip("/")
    return None


def _delegate(parent: Path, controller: str, *, own: bool = True) -> bool:
    """v2: let `parent`'s children have `controller`; in the runner's `own` cgroup, moving
    the runner out of the way into a leaf."""
    control = parent / "cgroup.subtree_control"
    try:
        if controller in control.read_text().split():
            return True
        control.write_text(f"+{controller}")
        return True
    except OSError as exc:
        if exc.errno != errno.EBUSY or not own:  # not ours to manage
            return False
    try:  # busy: processes live in it; if only this runner, it moves to a leaf of its own
        leaf = parent / f"{PREFIX}{_owner_tag()}{RUNNER_LEAF}"
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        control.write_text(f"+{controller}")
    except OSError:
        return False  # other processes are there too: they are not the runner's to move
    return True


def _read_counter(path: Path, key: str) -> int:
    """`key N` from a flat-keyed cgroup file such as memory.events; 0 if absent."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def _owner_tag() -> str:
    """Names this runner in its cgroups' names: pid and start time."""
    pid = os.getpid()
    return f"{pid}.{start_ticks(pid)}"


def _remove_stale(parent: Path) -> None:
    """Empty job cgroups whose runner died (rmdir refuses one with processes).

    Only a dead runner's: a live one may still have to read the events of a
    cgroup whose processes have all ended.
    """
    with contextlib.suppress(OSError):
        for child in parent.glob(f"{PREFIX}*"):
            pid, _, ticks = child.name.removeprefix(PREFIX).partition("-")[0].partition(".")
            owner_gone = not (
                pid.isdigit() and ticks.isdigit() and is_same_process(int(pid), int(ticks))
            )
            if owner_gone and time.time() - child.stat().st_mtime > STALE_AFTER:
                with contextlib.suppress(OSError):
                    child.rmdir()


SCOPE_WAIT = 5.0
"""Seconds to wait for systemd to move the runner into the scope it asked for."""


@dataclass(frozen=True)
class ScopeAttempt:
    """What became of asking the user's systemd for a scope: its unit, or why not."""

    unit: str | None
    why: str = ""


_SCOPE_LOCK = threading.Lock()


def systemd_scope() -> ScopeAttempt:
    """Move this runner, alone, into a new scope that the user's systemd delegates to it.

    Asked once per process (the SDK backend's jobs start from several threads), over
    the user's D-Bus (`busctl`, systemd's own client), as `systemd-run --user --scope
    -p Delegate=yes` asks for a new process. The scope ends when the runner does:
    systemd collects it once it is empty.
    """
    with _SCOPE_LOCK:
        return _ask_for_scope()


@functools.cache
def _ask_for_scope() -> ScopeAttempt:
    busctl = shutil.which("busctl")
    if busctl is None:
        return ScopeAttempt(None, "no systemd here (busctl not found)")
    unit = f"{PREFIX}{_owner_tag()}.scope"
    call = [busctl, "--user", "--timeout=5", "call", "org.freedesktop.systemd1"]
    call += ["/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"]
    call += ["StartTransientUnit", "ssa(sv)a(sa(sv))", unit, "fail", "3"]
    call += ["PIDs", "au", "1", str(os.getpid()), "Delegate", "b", "true"]
    call += ["Description", "s", "sandbox-runner: the cgroups of its jobs' nodes", "0"]
    try:
        done = subprocess.run(call, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ScopeAttempt(None, f"systemd did not answer: {exc}")
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        return ScopeAttempt(None, f"no systemd user manager gave a scope: {said}")
    deadline = time.monotonic() + SCOPE_WAIT
    while time.monotonic() < deadline:  # systemd moves the runner as the unit starts
        if _memberships().get("", "").endswith(f"/{unit}"):
            return ScopeAttempt(unit)
        time.sleep(0.01)
    return ScopeAttempt(None, f"systemd did not move the runner into {unit}")


def why_not(controller: str) -> str:
    """`; why` no cgroup with `controller` could be made, once the runner asked the
    user's systemd for a scope: systemd's answer, or that its scope lacks the controller."""
    if _ask_for_scope.cache_info().currsize == 0:
        return ""
    attempt = systemd_scope()
    if attempt.unit is None:
        return f"; {attempt.why}"
    path = _own_path(controller)
    try:
        has = (path / "cgroup.controllers").read_text().split() if path else []
    except OSError:
        has = []
    if controller in has:
        return ""
    return (
        f"; systemd gave the scope {attempt.unit} without the {controller} controller"
        f" (it has: {' '.join(has) or 'none'}): user@.service does not delegate it"
        f" (`systemctl edit user@.service`: [Service] Delegate=memory pids)"
    )


def scope_of(path: Path) -> str | None:
    """The runner's systemd scope that `path` lies in, if any."""
    return next((p for p in path.parts if p.startswith(PREFIX) and p.endswith(".scope")), None)


def _parent(controllers: tuple[str, ...]) -> Path | None:
    """The cgroup to make a node's cgroup in: the runner's own where it can hand the
    controllers to children; on v2, else a scope of its own from the user's systemd
    (an ordinary user), or a `sandbox-runner` cgroup at the top (root)."""

    def own() -> Path | None:
        path = _own_path(controllers[0])
        if path is None or not path.is_dir():
            return None
        return path if all(_delegate(path, c) for c in controllers) else None

    if not unified():
        path = _own_path(controllers[0])
        return path if path is not None and path.is_dir() else None
    if (path := own()) is not None:
        return path
    if os.geteuid() != 0:  # once in a scope of its own, the runner's cgroup is its own
        return own() if systemd_scope().unit is not None else None
    top = ROOT / TOP
    try:
        top.mkdir(exist_ok=True)
    except OSError:
        return None
    if all(_delegate(ROOT, c, own=False) and _delegate(top, c, own=False) for c in controllers):
        return top
    return None


def _make(controllers: tuple[str, ...], name: str, limits: dict[str, str]) -> Path | None:
    """A child cgroup with `limits` written, or None where the machine does not allow it.

    v1 has a hierarchy per controller (one controller per call); v2 has one, where
    a node's one cgroup holds all its controllers.
    """
    parent = _parent(controllers)
    if parent is None:
        return None
    _remove_stale(parent)
    path = parent / f"{PREFIX}{_owner_tag()}-{name}"
    try:
        path.mkdir()
        for file, value in limits.items():
            if (path / file).exists():
                (path / file).write_text(value)
    except OSError:
        with contextlib.suppress(OSError):
            path.rmdir()
        return None
    return path


def available(controller: str) -> bool:
    """Whether this runner can make a cgroup with `controller` here (tried once per process)."""
    return _available(ROOT, controller)


@functools.cache
def _available(_root: Path, controller: str) -> bool:
    path = _make((controller,), f"probe-{os.getpid()}", {})
    if path is None:
        return False
    with contextlib.suppress(OSError):
        path.rmdir()
    return True


@dataclass(frozen=True)
class JobCgroup:
    """The cgroups of one node of a job: `memory` and `pids` are None where none could be made."""

    memory: Path | None
    pids: Path | None

    @classmethod
    def make(cls, name: str, *, memory: int | None, processes: int | None) -> JobCgroup:
        limits = {}
        if memory is not None:
            limits["memory"] = {  # v1 (swap counted too, so no paging past the limit), then v2
                "memory.limit_in_bytes": str(memory),
                "memory.memsw.limit_in_bytes": str(memory),
                "memory.max": str(memory),
                "memory.swap.max": "0",
            }
        if processes is not None:
            limits["pids"] = {"pids.max": str(processes)}
        if not unified():
            made = {c: _make((c,), name, files) for c, files in limits.items()}
            return cls(made.get("memory"), made.get("pids"))
        held = tuple(c for c in limits if available(c))  # one cgroup holds them all
        if not held:
            return cls(None, None)
        path = _make(held, name, {k: v for c in held for k, v in limits[c].items()})
        return cls(path if "memory" in held else None, path if "pids" in held else None)

    def enter(self) -> tuple[str, ...]:
        """The argv prefix that moves the node's first process into these cgroups."""
        paths = dict.fromkeys(p for p in (self.memory, self.pids) if p is not None)
        procs = [str(p / "cgroup.procs") for p in paths]
        return ("sh", "-c", ENTER, "sh", *procs, "--") if procs else ()

    def held(self, *, memory: bool, processes: bool) -> dict[str, str]:
        """What holds each limit asked for, and where: the job's `sandbox.limits` record."""
        kind = f"cgroup v{2 if unified() else 1}"
        held: dict[str, object] = {
            "memory": memory and (kind if self.memory else "rlimit (address space per process)"),
            "processes": processes
            and (kind if self.pids else "rlimit (per user, above its count; not root)"),
        }
        path = self.memory or self.pids
        held["cgroup"] = path and str(path)  # which one it is
        held["systemd_scope"] = path and scope_of(path)  # the scope the runner asked for
        return {k: v for k, v in held.items() if isinstance(v, str)}

    def memory_exceeded(self) -> bool:
        """True once the kernel killed a process of the node for going over its memory."""
        if self.memory is None:
            return False
        return (
            _read_counter(self.memory / "memory.oom_control", "oom_kill") > 0
            or _read_counter(self.memory / "memory.events", "oom_kill") > 0
        )

    def processes_exceeded(self) -> bool:
        """True once a fork of the node was refused for going over its process count."""
        return self.pids is not None and _read_counter(self.pids / "pids.events", "max") > 0

    def remove(self) -> None:
        """Remove the cgroups; call once every process of the node has exited."""
        for path in (self.memory, self.pids):
            if path is not None:
                rmdir(path)


def rmdir(path: Path, wait: float = 1.0) -> None:
    """Remove an empty cgroup (gone already is fine), trying for up to `wait` seconds: the
    kernel frees a cgroup a moment after its last process has exited."""
    for _ in range(max(1, round(wait / 0.02))):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
