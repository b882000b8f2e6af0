"""The standbys a resident process keeps (the SDK backend's own): taken by the next job like the
last one, replaced in the background once that job's processes are up, bounded in memory and
in idle time, and dropped, never left, when the process lets them go.

Standbys are started by one long-lived thread of the pool: a sandbox dies with the thread
that started it (bubblewrap's `--die-with-parent` is the parent *thread's* death signal),
so no job's thread, which ends with its job, may start one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import threading
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from packaging.utils import canonicalize_name

from envs.log import get_logger
from envs.requirements import name_of
from runner import launch
from runner.process import Process, start_ticks
from runner.sandbox import confine
from runner.spec import JobSpec, new_name
from runner.store import JobRecord, JobStore, ProcessRef, new_tag
from runner.units import parse_size
from runner.warm import imports, priority, program
from runner.warm.standby import Relay, Standby, launch_key, startup, submission_key

if TYPE_CHECKING:
    from runner.gpus import Gpu
    from runner.settings import RunnerSettings

_log = get_logger("runner.warm")

LOOK_EVERY = 2.0
"""Seconds between the pool's looks at idle time and memory."""

_POOLS: weakref.WeakSet[Pool] = weakref.WeakSet()


@atexit.register
def close_all() -> None:
    """Drop the standbys of every pool of this process (at its exit: their folders too)."""
    for pool in list(_POOLS):
        pool.close()


@dataclass(frozen=True)
class Request:
    """Make a standby for the next job like `spec`, in `env_dir` (a started job asks)."""

    spec: JobSpec
    env_dir: Path
    base_python: str | None
    preload: tuple[str, ...] = ()
    """Modules to import besides the settings' (`runner train --preload`)."""


class Warm(Protocol):
    """What a job's start asks of the place its standbys live (a `Pool`, or the resident
    runner's spares, `served.Served`)."""

    def claim(self, name: str) -> Standby | str | None: ...

    def replenish(self, request: Request) -> None: ...


class Pool:
    """Standbys by submission key (`standby.submission_key`), one per key at most."""

    def __init__(self, store: JobStore, settings: RunnerSettings) -> None:
        self.store = store
        self.settings = settings
        self._lock = threading.Lock()
        self._ready: dict[str, Standby] = {}
        self._taken: dict[str, Standby] = {}
        self._why: dict[str, str] = {}
        self._wanted: queue.Queue[Request | None] = queue.Queue()
        self._making: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        with contextlib.suppress(OSError):
            store.sweep()  # folders made ahead by a pool that was killed
        _POOLS.add(self)

    # -- for jobs ------------------------------------------------------------------

    def take(self, spec: JobSpec) -> Standby | None:
        """The ready standby for a job like `spec`, now the job's alone; None: start cold
        (and where a standby was there and could not serve, `claim` says why)."""
        key = submission_key(spec) if self.settings.warm else None
        if key is None:
            return None
        dead = None
        with self._lock:
            standby = self._ready.get(key)
            if standby is None:
                return None
            if standby.proc.poll() is not None:
                dead = self._ready.pop(key)
                self._why[spec.name] = dead.ended()
            elif not standby.ready():  # a job never waits for one: it starts cold
                self._why[spec.name] = f"the standby is still warming ({standby.age:.1f} s old)"
            else:
                del self._ready[key]
                self._taken[standby.name] = standby
                return standby
        if dead is not None:
            dead.drop()
        return None

    def claim(self, name: str) -> Standby | str | None:
        """The standby job `name` took at submission, handed to its start; or why it took
        none where one was there (it ended, it was warming); None: there was none."""
        with self._lock:
            return self._taken.pop(name, None) or self._why.pop(name, None)

    def release(self, standby: Standby) -> None:
        """A job that took it was refused before it started: it is dropped."""
        with self._lock:
            self._taken.pop(standby.name, None)
        standby.drop()

    def replenish(self, request: Request) -> None:
        """Start, in the background, a standby for the next job like this one (if none is)."""
        key = submission_key(request.spec) if self.settings.warm else None
        if key is None or self._closed:
            return
        with self._lock:
            if key in self._ready or key in self._making:
                return
            self._making.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="standbys", daemon=True)
                self._thread.start()
        self._wanted.put(request)

    def empty(self) -> bool:
        """No standby is ready, taken or on its way."""
        with self._lock:
            return not (self._ready or self._taken or self._making)

    # -- for people ----------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        """Each standby: its env, what it preloaded, its memory and age, whether it is ready."""
        with self._lock:
            standbys = list(self._ready.values())
        return [
            {
                "ready": s.ready(),  # first: once ready, it has said what it imported
                "name": s.name,
                "env": Path(s.python).parents[1].name,
                "preloaded": list(s.preloaded),
                "ranks": s.ranks,
                "rss": s.rss(),
                "age": round(s.age, 1),
            }
            for s in standbys
        ]

    def close(self) -> None:
        """Drop every standby; later requests are ignored."""
        self._closed = True
        self._wanted.put(None)
        with self._lock:
            standbys = [*self._ready.values(), *self._taken.values()]
            self._ready.clear()
            self._taken.clear()
        for standby in standbys:
            standby.drop()

    # -- the pool's thread ---------------------------------------------------------

    def _work(self) -> None:
        while not self._closed:
            try:
                request = self._wanted.get(timeout=LOOK_EVERY)
            except queue.Empty:
                request = None
            if request is not None and not self._closed:
                self._make(request)
            self._trim()

    def _make(self, request: Request) -> None:
        key = submission_key(request.spec)
        assert key is not None
        try:
            standby = start(self.store, self.settings, request)
        except Exception as exc:  # never a job's failure: the next job starts cold
            _log.warning("standby.failed", error=f"{type(exc).__name__}: {exc}")
            standby = None
        with self._lock:
            self._making.discard(key)
            if standby is not None and not self._closed:
                self._ready[key] = standby
                standby = None
        if standby is not None:
            standby.drop()

    def _trim(self) -> None:
        """Drop standbys that ended or idled too long, then the oldest while all of them hold
        more memory than the budget."""
        budget = parse_size(self.settings.warm_memory)
        with self._lock:
            standbys = sorted(self._ready.items(), key=lambda kv: kv[1].born)
        idle = self.settings.warm_idle
        gone = [(k, s) for k, s in standbys if s.age > idle or s.proc.poll() is not None]
        gone += [(k, s) for k, s in standbys if not Path(s.python).exists()]  # env removed
        kept = [(k, s) for k, s in standbys if (k, s) not in gone]
        rss = {k: s.rss() for k, s in kept}  # each read once: a scan of /proc
        total = sum(rss.values())
        while kept and total > budget:
            oldest = kept.pop(0)
            total -= rss[oldest[0]]
            gone.append(oldest)
        for key, standby in gone:
            with self._lock:
                if self._ready.get(key) is not standby:
                    continue  # taken meanwhile
                del self._ready[key]
            standby.drop()


def preloads(
    request: Request, settings: RunnerSettings, state_dir: Path
) -> tuple[bool, tuple[str, ...], bool]:
    """Whether to warm torch (a torch job's, or a job whose packages name torch), the
    modules to import, and whether to measure them: those named (`--preload`,
    RUNNER_PRELOAD), then, only tried (`?NAME`: one that fails to import is skipped), the
    modules of the job's own packages: all of them the first time, to measure what each
    takes, and from then on those that took over `imports.HEAVY_MS`."""
    spec = request.spec
    torch = spec.framework == "torch" or any(name_of(r) == "torch" for r in spec.requirements)
    named = dict.fromkeys((*settings.preload, *request.preload))
    own = [m for m in _modules_of(request.env_dir, spec) if m not in named and m != "torch"]
    own, measuring = imports.heavy(state_dir, request.env_dir, own)
    modules = (*named, *(f"?{m}" for m in own))
    return torch, tuple(m for m in modules if m != "torch" or not torch), measuring


def _modules_of(env_dir: Path, spec: JobSpec) -> list[str]:
    """The top-level modules the job's requested packages install in its env (from their
    RECORD), as `import` names them: the one named as its package where there is one
    (torch, not also functorch and torchgen), else all of them (scikit-learn: sklearn)."""
    wanted = {name_of(r) for r in spec.requirements}
    found: dict[str, None] = {}
    for info in sorted(env_dir.glob("lib/python*/site-packages/*.dist-info")):
        name = canonicalize_name(info.name.removesuffix(".dist-info").rpartition("-")[0])
        if name not in wanted:
            continue
        modules: dict[str, None] = {}
        with contextlib.suppress(OSError):
            for line in (info / "RECORD").read_text().splitlines():
                top, _, rest = line.split(",", 1)[0].partition("/")
                module = top.removesuffix(".py") if not rest else top
                importable = rest.startswith("__init__.py") or (not rest and top.endswith(".py"))
                if importable and module.isidentifier() and not module.startswith("_"):
                    modules[module] = None
        own = name.replace("-", "_")
        found.update({own: None} if own in modules else modules)
    return list(found)


def _gpus(spec: JobSpec, settings: RunnerSettings) -> tuple[Gpu, ...]:
    """The GPUs a standby's sandbox holds (their device nodes; never CUDA: its warm-up runs on
    the CPU): those the job named, else the first of the pool, which a job is leased when
    they are free. A job leased others finds the standby's sandbox not its own: it starts
    cold, saying so."""
    pool = settings.gpu_pool()
    if spec.gpu_ids:
        return tuple(next(g for g in pool if g.is_named(n)) for n in spec.gpu_ids)
    return tuple(pool[: spec.gpus])


def _argv(step: launch.Step, ranks: int, warm_up: tuple[str, ...]) -> tuple[str, ...]:
    """A standby's argv: `program.py` with its pipes and preloads (`warm_up`), or, for a node
    of several ranks, the cold step's `ranks.py` made a standby (`warm` for `cold -- ...`),
    which starts one such standby per rank."""
    if ranks == 1:
        return (step.argv[0], "-c", program.source(), *warm_up)
    node = step.argv[: step.argv.index("cold")]  # python -I -S ranks.py GRACE N
    return (*node, "warm", *warm_up[:2], program.source(), *warm_up[2:])


def start(store: JobStore, settings: RunnerSettings, request: Request) -> Standby:
    """Start a standby in the sandbox a job like `request.spec`, of a new name, would get."""
    from runner.job import cpu_pool  # the cold start, mirrored
    from runner.steps import _place, node_cgroup, step_environ

    spec = request.spec.model_copy(update={"name": new_name()})
    name = spec.name
    tag = new_tag(name)
    owner = ProcessRef.of(os.getpid(), start_ticks(os.getpid()))
    store.reserve(name, owner)
    made: list[Any] = []
    try:
        job = JobRecord(name=name, tag=tag, spec=spec, base_python=request.base_python)
        policy = spec.sandbox or settings.policy()
        where = _place(store, job, request.env_dir, settings, policy)
        cgroup = node_cgroup(policy, tag, 0)
        if cgroup is not None:
            made.append(cgroup)
        cores = cpu_pool()  # its job's own are leased later, and pinned at hand-over
        cpus = tuple(cores[len(cores) - spec.cpus :]) if spec.cpus else ()
        place = replace(where, cgroups=cgroup, cpus=cpus, gpus=_gpus(spec, settings))
        confinement = confine(policy, settings.bwrap, place)
        (step,) = launch.steps(
            spec, request.env_dir / "bin", where.jobdir, grace=settings.cancel_grace
        )
        environ = step_environ(spec, step, request.env_dir, where, confinement)
        own = {*dict(step.env), *spec.env}  # the job's own values come with the job
        kept = startup(environ)
        standby_env = {k: v for k, v in environ.items() if k not in own or k in kept}
        state_dir = store.root.parent
        torch_too, modules, measuring = preloads(request, settings, state_dir)
        control, ready = os.pipe(), os.pipe()
        fds = (control[0], ready[1], *confinement.fds)
        warm_up = (str(control[0]), str(ready[1]), "1" if torch_too else "0", *modules)
        argv = _argv(step, spec.nproc_per_node, warm_up)
        relay = Relay()
        try:
            proc = Process(
                (*priority.idle_prefix(), *confinement.prefix, *argv),  # IO priority: given back
                env=standby_env,
                cwd=where.workdir,
                on_line=relay,
                tag=tag,
                pass_fds=fds,
            )
        except BaseException:
            os.close(control[1])
            os.close(ready[0])
            raise
        finally:
            for fd in fds:
                os.close(fd)
        standby = Standby(
            name=name,
            tag=tag,
            launch=launch_key(confinement.prefix, confinement.fds, environ, step.argv[0], cpus),
            python=step.argv[0],
            preloaded=(*(("torch",) if torch_too else ()), *(m for m in modules if m[0] != "?")),
            proc=proc,
            relay=relay,
            control=control[1],
            ready_fd=ready[0],
            store=store,
            cgroup=cgroup,
            ranks=spec.nproc_per_node,
        )
        if measuring:
            own = {m[1:] for m in modules if m[0] == "?"}
            standby.on_ready = lambda s: imports.keep(
                state_dir, request.env_dir, {m: ms for m, ms in s.import_ms.items() if m in own}
            )
    except BaseException:
        for cgroup in made:
            cgroup.remove()
        store.unreserve(name)
        raise
    return standby
