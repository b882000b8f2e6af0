"""Start a job's steps, each inside its sandbox, and turn what they print into records.

Each step runs as a `Node`: its process tree and what its sandbox's layers opened
for it (its cgroup), which the node gives back when it is closed, and the signs
its layers read in its stderr, from which they explain an exit they caused.
Node-0's sandbox holds the namespaces that later nodes join (without network);
each node's first process enters the node's cgroup, where the job has limits.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from envs.base import probe as base_probe
from runner import launch
from runner.cgroup import JobCgroup
from runner.process import TAG, Process
from runner.sandbox import (
    SIGNS,
    Confinement,
    Exit,
    Host,
    Place,
    SandboxPolicy,
    confine,
    degraded_record,
    identity,
    job_environ,
)
from runner.settings import RunnerSettings
from runner.spec import JobSpec, ScriptEntry
from runner.store import JobRecord, JobStore

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

    from runner.gpus import Gpu
    from runner.warm.pool import Warm
    from runner.warm.standby import Standby


@dataclass
class Node:
    """One step of a job, started in its sandbox: its process tree and what the sandbox's
    layers opened for it (its cgroup), given back by `close`."""

    step: launch.Step
    proc: Process
    cgroup: JobCgroup | None = None
    signs: set[str] = field(default_factory=set)
    """The layers' signs its stderr showed so far (`sandbox.SIGNS`)."""
    preloaded: tuple[str, ...] | None = None
    """Started warm, from a standby that had imported these; None: started cold."""

    def exit(self, code: int | None) -> Exit:
        """How it ended, for the layers to explain (read before `close`: the cgroup's
        counters go with it)."""
        return Exit(code, frozenset(self.signs), self.cgroup)

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()


@dataclass
class Nodes:
    """A job's nodes as they start, and the pipe that keeps node-0 (the rendezvous store's
    host) alive while others run; `close` gives back all they hold."""

    started: list[Node] = field(default_factory=list)
    holds: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Let node-0 end: close the runner's end of its pipe (see `launch.STORE_HOST`)."""
        while self.holds:
            os.close(self.holds.pop())

    def end(self, grace: float) -> None:
        """End every node still running: TERM, then KILL after `grace`."""
        self.release()
        for node in self.started:
            if node.proc.poll() is None:
                node.proc.end(grace)

    def close(self) -> None:
        self.release()
        for node in self.started:
            node.close()


def data_cache(settings: RunnerSettings, policy: SandboxPolicy) -> Path | None:
    """The user's data cache that a job's HF_HOME, TORCH_HOME... point into; None if off."""
    return settings.data_cache_dir if policy.data_cache and policy.mode != "off" else None


def _ranks(spec: JobSpec) -> Callable[[str], tuple[int | None, str]]:
    """How a step's line tells its rank: a direct rank alone is 0; torchrun and `ranks.py`
    prefix their workers' lines."""
    if launch.direct(spec) and spec.nproc_per_node == 1:
        return lambda line: (0, line)
    if spec.framework == "torch":
        return launch.split_rank
    return lambda line: (None, line)


def _on_line(log: Logger, spec: JobSpec, signs: set[str]) -> Callable[[str, str, bool], None]:
    """Turn each line a step prints into an `output` record, with its rank where known."""
    split = _ranks(spec)  # once per job, not per line
    going_on: dict[str, bool] = {}  # per stream: its last piece was a partial one

    def on_line(stream: str, line: str, partial: bool) -> None:
        # the rank prefix starts a line: a piece that goes on a line keeps none
        rank, text = (None, line) if going_on.get(stream) else split(line)
        going_on[stream] = partial
        if stream == "stderr":
            signs.update(name for name, pattern in SIGNS.items() if pattern.match(text))
        fields: dict[str, object] = {"stream": stream}
        if rank is not None:  # torchrun's own lines carry none
            fields["rank"] = rank
        if partial:  # a piece of a line; it goes on in the stream's next record
            fields["partial"] = True
        log.info("output", **fields, line=text)

    return on_line


def start_steps(
    store: JobStore,
    job: JobRecord,
    env_dir: Path,
    log: Logger,
    settings: RunnerSettings,
    nodes: Nodes,
    warm: Warm | None = None,
) -> None:
    """Spawn every step inside its sandbox; all nodes of a job share one network namespace.

    Each node joins `nodes` as soon as it holds something, so that the caller, which
    closes `nodes` whatever happens, gives back what a start that failed half way made.
    With `warm`, the standby the job took at submission becomes its one step, and once
    the job's processes are up, a standby for the next job like it starts.
    """
    spec = job.spec
    policy = spec.sandbox or settings.policy()
    where = _place(store, job, env_dir, settings, policy)
    held = _leased_gpus(job, settings)
    hold = os.pipe() if spec.framework == "torch" and spec.num_nodes > 1 else None
    if hold:
        nodes.holds.append(hold[1])
    steps = launch.steps(
        spec, env_dir / "bin", where.jobdir, hold[0] if hold else None, settings.cancel_grace
    )
    warm_node = _from_standby(warm, job, steps, env_dir, where, settings, log) if warm else None
    if warm_node is not None:
        nodes.started.append(warm_node)
        steps = []
    namespaces: int | None = None  # node-0's sandbox, which later nodes join
    for index, step in enumerate(steps):
        report = os.pipe() if len(steps) > 1 and not policy.network and index == 0 else None
        with contextlib.ExitStack() as after, contextlib.ExitStack() as undo:
            if report:  # the runner's copy of the writing end goes once the node started
                after.callback(os.close, report[1])
            if hold and index == 0:
                after.callback(os.close, hold[0])
            cgroup = node_cgroup(policy, job.tag, index)
            if cgroup is not None:
                undo.callback(cgroup.remove)  # the node failed to start: nothing holds it
            place = replace(
                where,
                join=namespaces,
                report_fd=report[1] if report else None,
                cgroups=cgroup,
                gpus=_share(held, index, spec.gpus),
                cpus=_share(tuple(job.cpus), index, spec.cpus),
                host_id=f"{job.tag}-{index}" if len(steps) > 1 else None,
            )
            confinement = confine(policy, settings.bwrap, place)
            after.callback(_close, confinement.fds)
            environ = step_environ(spec, step, env_dir, where, confinement)
            if index == 0:
                _log_sandbox(log, policy, cgroup, confinement, where.user)
            step_log = log.bind(step=step.name)
            argv = (*confinement.prefix, *step.argv)
            signs: set[str] = set()
            proc = Process(
                argv,
                env=environ,
                cwd=where.workdir,
                on_line=_on_line(step_log, spec, signs),
                tag=job.tag,
                pass_fds=(
                    *((report[1],) if report else ()),
                    *((hold[0],) if hold and index == 0 else ()),
                    *confinement.fds,
                ),
            )
            undo.pop_all()
        nodes.started.append(Node(step, proc, cgroup, signs))
        step_log.info("job.start", argv=list(argv), pid=proc.pid)
        if report and confinement.reports_namespaces:
            namespaces = _namespace_pid(report[0])
        elif report:
            os.close(report[0])
    if warm is not None:
        from runner.warm.pool import Request

        warm.replenish(Request(spec, env_dir, job.base_python))


def _from_standby(
    warm: Warm,
    job: JobRecord,
    steps: list[launch.Step],
    env_dir: Path,
    where: Place,
    settings: RunnerSettings,
    log: Logger,
) -> Node | None:
    """The job's one step, from the standby it took at submission; None: start it cold."""
    standby = warm.claim(job.name)
    if isinstance(standby, str):
        log.info("job.cold", why=standby)
        return None
    if standby is not None and len(steps) != 1:
        standby.drop()
        return None
    return _warm_start(standby, job, steps[0], env_dir, where, settings, log) if standby else None


def _warm_start(
    standby: Standby,
    job: JobRecord,
    step: launch.Step,
    env_dir: Path,
    where: Place,
    settings: RunnerSettings,
    log: Logger,
) -> Node | None:
    """The job's one step from its standby, if the standby's start is the one this job's
    cold start would be; else the standby is dropped (None: start cold), and the log says why."""
    from runner.warm.standby import launch_key

    spec = job.spec
    policy = spec.sandbox or settings.policy()
    cpus = _share(tuple(job.cpus), 0, spec.cpus)
    gpus = _share(_leased_gpus(job, settings), 0, spec.gpus)
    place = replace(where, cgroups=standby.cgroup, cpus=cpus, gpus=gpus)
    confinement = confine(policy, settings.bwrap, place)
    _close(confinement.fds)  # the standby's own were passed when it started
    environ = {**step_environ(spec, step, env_dir, where, confinement), TAG: job.tag}
    python = step.argv[0]
    launch = launch_key(confinement.prefix, confinement.fds, environ, python, cpus)
    why = standby.mismatch(launch, python)
    if why is not None:
        log.info("job.cold", why=why)
        standby.drop()
        return None
    _log_sandbox(log, policy, standby.cgroup, confinement, where.user)
    step_log = log.bind(step=step.name)
    signs: set[str] = set()
    out = _on_line(step_log, spec, signs)
    standby.hand_over(step.argv, environ, where.workdir, out, cpus)
    step_log.info(
        "job.start",
        argv=[*confinement.prefix, *step.argv],
        pid=standby.proc.pid,
        warm=True,
        preloaded=list(standby.preloaded),
        standby_age=round(standby.age, 3),
    )
    return Node(step, standby.proc, standby.cgroup, signs, standby.preloaded)


_Unit = TypeVar("_Unit")


def _leased_gpus(job: JobRecord, settings: RunnerSettings) -> tuple[Gpu, ...]:
    """The GPUs the job was leased, in its lease's order (node k gets the k-th share)."""
    by_uuid = {gpu.uuid: gpu for gpu in settings.gpu_pool()} if job.gpus else {}
    return tuple(by_uuid[uuid] for uuid in job.gpus)


def _share(units: tuple[_Unit, ...], index: int, per_node: int) -> tuple[_Unit, ...]:
    """Node `index`'s share of the job's leased GPUs or CPU cores (`per_node` each)."""
    return units[index * per_node : (index + 1) * per_node]


def node_cgroup(policy: SandboxPolicy, tag: str, index: int) -> JobCgroup | None:
    """Node `index`'s cgroup, where the job has a memory or process limit to hold."""
    if policy.mode == "off" or not (policy.memory or policy.processes):
        return None
    return JobCgroup.make(f"{tag}-{index}", memory=policy.memory, processes=policy.processes)


def step_environ(
    spec: JobSpec, step: launch.Step, env_dir: Path, where: Place, confinement: Confinement
) -> dict[str, str]:
    """The whole environment of a step's first process, built from scratch."""
    return job_environ(
        os.environ,
        bin_dir=env_dir / "bin",
        workdir=where.workdir,
        tmpdir=where.tmpdir,
        job_env={
            **_module_path(spec),
            **(launch.torch_environ() if spec.framework == "torch" else {}),
            **dict(step.env),
            **spec.env,
        },
        torch=spec.framework == "torch",
        layers=confinement.env,
    )


def _close(fds: tuple[int, ...]) -> None:
    for fd in fds:
        os.close(fd)


def _place(
    store: JobStore, job: JobRecord, env_dir: Path, settings: RunnerSettings, policy: SandboxPolicy
) -> Place:
    """The folders of a job's steps, made here: private ones, the data cache it shares."""
    jobdir = store.dir(job.name)
    tmp, home = jobdir / "tmp", jobdir / "home"
    for folder in (tmp, home):
        folder.mkdir(mode=0o700, exist_ok=True)
    data = data_cache(settings, policy)
    if data is not None:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
    user = identity.for_job(policy, Host.probe(settings.bwrap))
    if user is not None:  # root's job: its folders are its user's; its records stay root's
        user.own(jobdir, store.workdir(job.name), tmp, home)
        if data is not None:
            user.own_tree(data)
    return Place(
        jobdir=jobdir,
        workdir=store.workdir(job.name),
        tmpdir=tmp,
        home=home,
        env_dirs=(
            env_dir,
            Path(os.path.realpath(env_dir / "bin" / "python")).parents[1],
            *_base_dirs(job.base_python),
        ),
        shared=shared_paths(job.spec),
        hidden=(settings.state_dir, settings.cache_dir),
        data_cache=data,
        device_root=settings.device_root,
        ranks=job.spec.nproc_per_node,
        grace=settings.cancel_grace,
        user=user,
    )


def _base_dirs(base_python: str | None) -> tuple[Path, ...]:
    """A layered env's base: its interpreter's prefix and its site folders, read-only."""
    if base_python is None:
        return ()
    base = base_probe(base_python)
    prefix = Path(os.path.realpath(base_python)).parents[1]
    return (prefix, *(Path(d) for d in base.site_dirs))


def _log_sandbox(
    log: Logger,
    policy: SandboxPolicy,
    cgroup: JobCgroup | None,
    confinement: Confinement,
    user: identity.Identity | None,
) -> None:
    """Once per job: who it runs as (root's), how its limits are held, and what of its
    sandbox is not as asked."""
    if user is not None:
        log.info("sandbox.identity", user=user.name, uid=user.uid, gid=user.gid, note=user.note)
    if cgroup:
        held = cgroup.held(memory=bool(policy.memory), processes=bool(policy.processes))
        log.info("sandbox.limits", **held)
    if confinement.not_enforced:
        log.warning("sandbox.degraded", **degraded_record(confinement.not_enforced))
    if confinement.notes:
        log.warning("sandbox.not_shared", notes=list(confinement.notes))


def shared_paths(spec: JobSpec) -> tuple[Path, ...]:
    """The user's paths a job reads: its script with the folder beside it, or the cwd of `-m`."""
    entry = spec.entry
    if not isinstance(entry, ScriptEntry):
        return ()
    if entry.kind == "script":
        script = Path(entry.target).resolve()
        return (script.parent, script)
    return (Path(entry.cwd),) if entry.cwd else ()


def _module_path(spec: JobSpec) -> dict[str, str]:
    """`-m MODULE` finds its module in the folder the user ran it from, as python -m does."""
    entry = spec.entry
    if isinstance(entry, ScriptEntry) and entry.kind == "module" and entry.cwd:
        return {"PYTHONPATH": entry.cwd}
    return {}


def _namespace_pid(fd: int) -> int:
    """bubblewrap's report of the first node's sandbox: the pid that holds its namespaces."""
    data = b""
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read1(4096):  # a JSON object, maybe over several lines
            data += chunk
            try:
                pid: int = json.loads(data)["child-pid"]
            except ValueError:
                continue
            return pid
    raise OSError(f"the sandbox of node-0 did not start (bubblewrap said {data!r})")
