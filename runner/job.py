"""The higher layer: take a stored job from Created to Complete or Failed.

It decides the environment (a leased cache env), the argv of each step, the
job's environment variables and what counts as success; `process.py` does
the spawning and signalling. Every event and every output line becomes a
record in the job's `log.jsonl`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envs import EnvError
from envs.base import probe as base_probe
from envs.files import dir_problem, remove_tree
from runner import launch
from runner.cgroup import ENTER_FAILED, JobCgroup
from runner.errors import DataDirError, InvalidJobError, JobNotFoundError, StateDirError
from runner.gpus import Gpu
from runner.leases import Lease, Leases, Stopped, Wanted
from runner.logs import Echo, JobLog
from runner.process import Process, end_tree, start_ticks
from runner.sandbox import (
    Confinement,
    Place,
    SandboxPolicy,
    check,
    confine,
    degraded_record,
    job_environ,
    landlock,
)
from runner.settings import RunnerSettings
from runner.spec import JobSpec, ScriptEntry, env_spec, open_cache
from runner.store import (
    COMPLETE,
    CREATED,
    FAILED,
    RUNNING,
    JobRecord,
    JobStore,
    ProcessRef,
    Status,
    StepRecord,
    now,
)
from runner.units import format_size

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

CANCELLED = "cancelled"
REFUSALS = {
    "memory": re.compile(r"^MemoryError\b"),
    "processes": re.compile(r"^(BlockingIOError|OSError): \[Errno 11\] Resource temporarily"),
    "sandbox": re.compile(r"^sandbox-runner: cannot "),
}
"""The last line of Python's traceback when an rlimit refused an allocation, or a new process;
the line of a step's wrapper that could not set up its sandbox (a cgroup, a Landlock scope)."""
SANDBOX_FAILED = (ENTER_FAILED, landlock.FAILED)


@dataclass(frozen=True)
class Outcome:
    """How a job ended, before it is recorded: the one final state and its reason."""

    status: Status
    reason: str | None = None
    exit_code: int | None = None
    steps: tuple[StepRecord, ...] = ()
    interrupted: bool = False
    """Ended by Ctrl-C or SIGTERM of the owner, which is raised again once recorded."""


def preflight(store: JobStore, settings: RunnerSettings, spec: JobSpec) -> None:
    """What would stop a job, checked before it is recorded or anything is built.

    A strict sandbox that cannot be had here, a state dir, cache or data cache
    that cannot be written: each raises with one line naming it.
    """
    policy = spec.sandbox or settings.policy()
    check(policy, settings.bwrap)
    _check_gpus(spec, settings.gpu_pool())
    if spec.cpus and shutil.which("taskset") is None:
        raise InvalidJobError("the job asks for CPUs, and taskset is not here: install util-linux")
    if spec.cpus * spec.num_nodes > len(cpu_pool()):
        raise InvalidJobError(
            f"the job asks for {spec.cpus * spec.num_nodes} CPUs ({spec.cpus} per node) and this "
            f"runner may use {len(cpu_pool())}"
        )
    store.check_writable()
    open_cache(settings, writing=True)
    data = _data_cache(settings, policy)
    problem = data and dir_problem(data)
    if problem:
        raise DataDirError(
            f"cannot use the data cache at {data}: {problem}; "
            "set RUNNER_DATA_DIR to another folder, or run with --no-data-cache"
        )


def _check_gpus(spec: JobSpec, pool: list[Gpu]) -> None:
    """A job that asks for more GPUs than the pool has, or for one it lacks, never could run."""
    wanted = spec.gpus * spec.num_nodes
    names = ", ".join(f"{g.index} ({g.name})" for g in pool) or "none"
    if wanted > len(pool):
        raise InvalidJobError(
            f"the job asks for {wanted} GPUs ({spec.gpus} per node, {spec.num_nodes} nodes) and "
            f"the pool has {len(pool)}: {names} (RUNNER_GPUS, CUDA_VISIBLE_DEVICES decide it)"
        )
    for name in spec.gpu_ids:
        if not any(g.is_named(name) for g in pool):
            raise InvalidJobError(f"GPU {name!r} is not in the pool: {names}")


def _data_cache(settings: RunnerSettings, policy: SandboxPolicy) -> Path | None:
    return settings.data_cache_dir if policy.data_cache and policy.mode != "off" else None


def this_process() -> ProcessRef:
    return ProcessRef.of(os.getpid(), start_ticks(os.getpid()))


def execute(
    store: JobStore,
    name: str,
    settings: RunnerSettings,
    *,
    echo: Echo | None = None,
    cleanup: bool = False,
) -> JobRecord:
    """Run a Created job to its end in this process, which becomes its owner.

    Every way out (success, a failed step, cancel, timeout, Ctrl-C, an error
    in the runner itself) ends in exactly one final state with a reason,
    recorded here and nowhere else. With `cleanup`, the job's scratch (working
    directory, entry script) is removed when it ends; its record and log stay,
    and so does the shared cached env.
    """
    joblog = JobLog(store.log_path(name), echo, level=settings.log_level)
    log: Logger = joblog.logger.bind(job=name)
    outcome: Outcome | None = None
    try:
        try:
            outcome = _life(store, name, settings, log, joblog)
        except KeyboardInterrupt:
            log.warning("job.cancel", by="interrupt")
            outcome = Outcome(FAILED, CANCELLED, interrupted=True)
        except EnvError as exc:
            log.error("env.failed", error=str(exc))
            first = str(exc).splitlines()[0]
            outcome = Outcome(FAILED, f"environment not built: {first}")
        except JobNotFoundError:  # deleted meanwhile (`runner rm`): nothing left to record
            raise
        except StateDirError as exc:  # its record cannot be written (a full disk)
            log.error("job.error", error=str(exc))
            outcome = Outcome(FAILED, str(exc))
        except Exception as exc:  # a bug or an unforeseen fault: never a silent Complete
            outcome = _runner_error(log, exc)
        record = _finish(store, name, log, outcome)
        joblog.check()
    finally:
        joblog.close()
        remove_tree(store.dir(name) / "tmp")
        if cleanup:
            remove_tree(store.workdir(name))
            remove_tree(store.dir(name) / "home")
            for scratch in (launch.ENTRY_FILE, launch.ARGS_FILE):
                (store.dir(name) / scratch).unlink(missing_ok=True)
    if outcome is not None and outcome.interrupted:
        raise KeyboardInterrupt
    return record


def _runner_error(log: Logger, exc: BaseException) -> Outcome:
    error = f"{type(exc).__name__}: {exc}"
    log.error("job.error", error=error, exc_info=exc)
    return Outcome(FAILED, f"runner error: {error}")


def _life(
    store: JobStore, name: str, settings: RunnerSettings, log: Logger, joblog: JobLog
) -> Outcome | None:
    """Created -> (env, GPUs) -> Running -> the steps' outcome; None if ended meanwhile."""
    began = time.monotonic()
    record = store.update(name, owner=this_process())
    spec = record.spec
    cache = open_cache(settings)
    with contextlib.ExitStack() as held:
        base_python = spec.base_python
        if spec.base_packages:  # the runtime's packages: a cached env, the base of this one
            base_spec = env_spec(settings, spec.base_packages, spec.index)
            base_python = str(held.enter_context(cache.lease(base_spec, log)).python)
        envspec = env_spec(settings, spec.packages, spec.index, base_python)
        env = held.enter_context(
            cache.lease(envspec, log, spec.lockfile.lock if spec.lockfile else None)
        )
        if env.meta.base is not None:  # a layer the cache chose: its base is bound too
            base_python = env.meta.base["python"]
        try:
            lease = _wait_for_devices(store, spec, settings, log, began)
        except Stopped as exc:
            if str(exc) == CANCELLED:
                log.info("job.not_started", status=store.load(name).status)
                return None
            return Outcome(FAILED, str(exc))
        try:
            running = store.advance(
                name,
                RUNNING,
                started=now(),
                env_key=env.key,
                index=envspec.index.shown(),
                base_python=base_python,
                gpus=list(lease.held.get("gpu", ())),
                cpus=[int(c) for c in lease.held.get("cpu", ())],
            )
            if running is None:  # cancelled (or reaped) while its env was being built
                log.info("job.not_started", status=store.load(name).status)
                return None
            return _run_steps(store, running, env.path, log, settings, joblog)
        finally:
            lease.release()


def _wait_for_devices(
    store: JobStore, spec: JobSpec, settings: RunnerSettings, log: Logger, began: float
) -> Lease:
    """The job's GPUs and CPU cores, once they are free (a `job.queued` record while it waits).

    Raises Stopped when the job is cancelled meanwhile, or its timeout passes.
    """
    wanted: dict[str, Wanted] = {}
    pools: dict[str, list[str]] = {}
    if spec.gpus:
        pool = settings.gpu_pool()
        pools["gpu"] = [g.uuid for g in pool]
        wanted["gpu"] = spec.gpus * spec.num_nodes
        if spec.gpu_ids:
            wanted["gpu"] = tuple(
                next(g.uuid for g in pool if g.is_named(name)) for name in spec.gpu_ids
            )
    if spec.cpus:
        pools["cpu"] = [str(c) for c in cpu_pool()]
        wanted["cpu"] = spec.cpus * spec.num_nodes
    if not wanted:
        return Lease()

    def stop() -> str | None:
        if store.load(spec.name).done:
            return CANCELLED
        if spec.timeout is not None and time.monotonic() - began > spec.timeout:
            log.warning("job.timeout", timeout=spec.timeout)
            what = " and ".join({"gpu": "GPUs", "cpu": "CPUs"}[k] for k in wanted)
            return f"timed out after {spec.timeout:g} s, waiting for {what}"
        return None

    lease = Leases(settings.leases_dir, pools).acquire(
        spec.name, wanted, stop=stop, on_wait=lambda fields: log.info("job.queued", **fields)
    )
    log.info("job.devices", **{kind: list(units) for kind, units in lease.held.items()})
    return lease


def cpu_pool() -> list[int]:
    """The cores jobs may be given: those this runner may run on."""
    return sorted(os.sched_getaffinity(0))


def _limit_hit(
    policy: SandboxPolicy, code: int | None, refused: set[str], cgroups: list[JobCgroup]
) -> str:
    """The limit that ended the job, only where the kernel's own accounting says so; or the
    sandbox that could not be set up, so the job never ran."""
    if "sandbox" in refused and code in SANDBOX_FAILED:
        return ": its sandbox could not be set up, so it never ran (its log says why)"
    if policy.memory and any(c.memory_exceeded() for c in cgroups):
        return f": memory limit of {format_size(policy.memory)} exceeded (killed by the kernel)"
    if policy.memory and "memory" in refused and not any(c.memory for c in cgroups):
        return (
            f": memory limit of {format_size(policy.memory)} exceeded "
            "(MemoryError under the address-space rlimit)"
        )
    if policy.processes and any(c.processes_exceeded() for c in cgroups):
        return f": process limit of {policy.processes} reached"
    if policy.processes and "processes" in refused and not any(c.pids for c in cgroups):
        return (
            f": process limit of {policy.processes} reached (a new process refused under "
            "RLIMIT_NPROC, which counts every process of this user)"
        )
    if policy.cpu_seconds and code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return f": CPU time limit of {policy.cpu_seconds} s exceeded"
    return ""


def _ranks(spec: JobSpec) -> Callable[[str], tuple[int | None, str]]:
    """How a step's line tells its rank: a direct rank is 0, torchrun prefixes its workers'."""
    if launch.direct(spec):
        return lambda line: (0, line)
    if spec.framework == "torch":
        return launch.split_rank
    return lambda line: (None, line)


def _on_line(log: Logger, spec: JobSpec, refused: set[str]) -> Callable[[str, str, bool], None]:
    """Turn each line a step prints into an `output` record, with its rank where known."""
    split = _ranks(spec)  # once per job, not per line
    going_on: dict[str, bool] = {}  # per stream: its last piece was a partial one

    def on_line(stream: str, line: str, partial: bool) -> None:
        # the rank prefix starts a line: a piece that goes on a line keeps none
        rank, text = (None, line) if going_on.get(stream) else split(line)
        going_on[stream] = partial
        if stream == "stderr":
            refused.update(k for k, pattern in REFUSALS.items() if pattern.match(text))
        fields: dict[str, object] = {"stream": stream}
        if rank is not None:  # torchrun's own lines carry none
            fields["rank"] = rank
        if partial:  # a piece of a line; it goes on in the stream's next record
            fields["partial"] = True
        log.info("output", **fields, line=text)

    return on_line


def _start_steps(
    store: JobStore,
    job: JobRecord,
    env_dir: Path,
    log: Logger,
    settings: RunnerSettings,
    running: list[tuple[launch.Step, Process]],
    refused: set[str],
    cgroups: list[JobCgroup],
    holds: list[int],
) -> None:
    """Spawn every step inside its sandbox; all nodes of a job share one network namespace.

    `holds` gets the runner's end of the pipe that keeps node-0, the store's host,
    alive until the other nodes have ended (see `launch.STORE_HOST`).
    """
    spec = job.spec
    policy = spec.sandbox or settings.policy()
    where = _place(store, job, env_dir, settings, policy)
    by_uuid = {gpu.uuid: gpu for gpu in settings.gpu_pool()} if job.gpus else {}
    held = tuple(by_uuid[uuid] for uuid in job.gpus)  # node k gets the k-th `spec.gpus` of them
    hold = os.pipe() if spec.framework == "torch" and spec.num_nodes > 1 else None
    if hold:
        holds.append(hold[1])
    steps = launch.steps(spec, env_dir / "bin", where.jobdir, hold_fd=hold[0] if hold else None)
    namespaces: int | None = None  # node-0's sandbox, which later nodes join
    for index, step in enumerate(steps):
        report = os.pipe() if len(steps) > 1 and not policy.network and index == 0 else None
        cgroup = None
        if policy.mode != "off" and (policy.memory or policy.processes):
            cgroup = JobCgroup.make(
                f"{job.tag}-{index}", memory=policy.memory, processes=policy.processes
            )
            cgroups.append(cgroup)
        place = replace(
            where,
            join=namespaces,
            report_fd=report[1] if report else None,
            cgroups=cgroup,
            gpus=held[index * spec.gpus : (index + 1) * spec.gpus],
            cpus=tuple(job.cpus[index * spec.cpus : (index + 1) * spec.cpus]),
            host_id=f"{job.tag}-{index}" if len(steps) > 1 else None,
        )
        try:
            confinement = confine(policy, settings.bwrap, place)
        except BaseException:
            if report:
                os.close(report[1])
            raise
        environ = job_environ(
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
        if index == 0:
            _log_sandbox(log, policy, cgroup, confinement)
        step_log = log.bind(step=step.name)
        argv = (*confinement.prefix, *step.argv)
        try:
            proc = Process(
                argv,
                env=environ,
                cwd=where.workdir,
                on_line=_on_line(step_log, spec, refused),
                tag=job.tag,
                pass_fds=(
                    *((report[1],) if report else ()),
                    *((hold[0],) if hold and index == 0 else ()),
                    *confinement.fds,
                ),
            )
        finally:
            for fd in confinement.fds:
                os.close(fd)
            if report:
                os.close(report[1])
            if hold and index == 0:
                os.close(hold[0])
        running.append((step, proc))
        step_log.info("job.start", argv=list(argv), pid=proc.pid)
        if report and confinement.reports_namespaces:
            namespaces = _namespace_pid(report[0])
        elif report:
            os.close(report[0])


def _place(
    store: JobStore, job: JobRecord, env_dir: Path, settings: RunnerSettings, policy: SandboxPolicy
) -> Place:
    """The folders of a job's steps, made here: private ones, the data cache it shares."""
    jobdir = store.dir(job.name)
    tmp, home = jobdir / "tmp", jobdir / "home"
    for folder in (tmp, home):
        folder.mkdir(exist_ok=True)
    data_cache = _data_cache(settings, policy)
    if data_cache is not None:
        data_cache.mkdir(parents=True, exist_ok=True)
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
        shared=_shared(job.spec),
        hidden=(settings.state_dir, settings.cache_dir),
        data_cache=data_cache,
        device_root=settings.device_root,
        ranks=job.spec.nproc_per_node,
        torch=job.spec.framework == "torch",
    )


def _base_dirs(base_python: str | None) -> tuple[Path, ...]:
    """A layered env's base: its interpreter's prefix and its site folders, read-only."""
    if base_python is None:
        return ()
    base = base_probe(base_python)
    prefix = Path(os.path.realpath(base_python)).parents[1]
    return (prefix, *(Path(d) for d in base.site_dirs))


def _log_sandbox(
    log: Logger, policy: SandboxPolicy, cgroup: JobCgroup | None, confinement: Confinement
) -> None:
    """Once per job: how its limits are held, and what of its sandbox is not as asked."""
    if cgroup:
        held = cgroup.held(memory=bool(policy.memory), processes=bool(policy.processes))
        log.info("sandbox.limits", **held)
    if confinement.not_enforced:
        log.warning("sandbox.degraded", **degraded_record(confinement.not_enforced))
    if confinement.notes:
        log.warning("sandbox.not_shared", notes=list(confinement.notes))


def _shared(spec: JobSpec) -> tuple[Path, ...]:
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


def _run_steps(
    store: JobStore,
    job: JobRecord,
    env_dir: Path,
    log: Logger,
    settings: RunnerSettings,
    joblog: JobLog,
) -> Outcome:
    """Start every step, supervise them, and end them all, whatever happens meanwhile."""
    spec = job.spec
    policy = spec.sandbox or settings.policy()
    started = time.monotonic()
    running: list[tuple[launch.Step, Process]] = []
    refused: set[str] = set()  # what an rlimit refused, read from the job's tracebacks
    cgroups: list[JobCgroup] = []
    holds: list[int] = []
    reason: str | None = None
    interrupted = False
    try:
        _start_steps(store, job, env_dir, log, settings, running, refused, cgroups, holds)
        store.update(
            spec.name,
            steps=[
                StepRecord(name=s.name, process=ProcessRef.of(p.pid, p.ticks)) for s, p in running
            ],
        )
        reason = _supervise(
            store, spec, running, log, settings.cancel_grace, started, holds, joblog
        )
    except KeyboardInterrupt:
        reason, interrupted = CANCELLED, True
        log.warning("job.cancel", by="interrupt")
    except OSError as exc:
        reason = f"cannot start {exc.filename or 'the job'}: {exc.strerror or exc}"
        log.error("job.spawn_failed", error=str(exc))
    finally:  # an error of the runner itself goes on up to `execute`, once all is ended
        _release(holds)
        for _step, proc in running:
            if proc.poll() is None:
                proc.end(settings.cancel_grace)
        steps = []
        for step, proc in running:
            code = proc.wait()
            log.bind(step=step.name).info(
                "job.exit", code=code, seconds=round(time.monotonic() - started, 3)
            )
            steps.append(StepRecord(name=step.name, process=None, exit_code=code))
    # the step that failed on its own (code > 0) is the cause, not the ones ended after it
    bad = sorted((s for s in steps if s.exit_code), key=lambda s: (s.exit_code or 0) < 0)
    failed = bad[0].exit_code if bad else (0 if steps else None)
    if reason is None and bad:
        reason = f"{bad[0].name} exited with code {failed}" + _limit_hit(
            policy, failed, refused, cgroups
        )
    for cgroup in cgroups:  # read above: the kernel's counters go with them
        cgroup.remove()
    if reason is None and not steps:
        reason = "no step was started"
    status: Status = COMPLETE if reason is None else FAILED
    return Outcome(status, reason, failed, tuple(steps), interrupted)


def _release(holds: list[int]) -> None:
    """Let node-0 (the store's host) end: close the runner's end of its pipe."""
    while holds:
        os.close(holds.pop())


def _supervise(
    store: JobStore,
    spec: JobSpec,
    running: list[tuple[launch.Step, Process]],
    log: Logger,
    grace: float,
    started: float,
    holds: list[int],
    joblog: JobLog,
) -> str | None:
    """Wait for every step; stop early on cancel, timeout, a node that failed, or a log that
    can no longer be written."""
    cancel = store.cancel_path(spec.name)
    first_failure: float | None = None
    while True:
        codes = [p.poll() for _s, p in running]
        if all(c is not None for c in codes[1:]):
            _release(holds)  # the other nodes are done with node-0's store
        if all(c is not None for c in codes):
            return None
        if cancel.exists():
            log.warning("job.cancel", by="request")
            return CANCELLED
        if joblog.problem is not None:
            return f"stopped: {joblog.problem}"
        if spec.timeout is not None and time.monotonic() - started > spec.timeout:
            log.warning("job.timeout", timeout=spec.timeout)
            return f"timed out after {spec.timeout:g} s"
        if any(codes):
            # a failed node takes the job down; give the others a moment to notice on their own
            first_failure = first_failure or time.monotonic()
            if time.monotonic() - first_failure > grace:
                return None
        # wake as soon as a step ends, and at least every 50 ms for cancel and timeout
        next(p for (_s, p), c in zip(running, codes, strict=True) if c is None).exited(0.05)


def _finish(store: JobStore, name: str, log: Logger, outcome: Outcome | None) -> JobRecord:
    """Record the job's one final state; a job already final (cancelled meanwhile) stays so."""
    record = None
    if outcome is not None:
        final: dict[str, Any] = {
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "reason": outcome.reason,
            "finished": now(),
            "steps": list(outcome.steps),
        }
        try:
            record = store.advance(name, **final)
        except StateDirError as exc:  # a full disk: said here; readers see its owner gone
            final["reason"] = f"{outcome.reason or outcome.status}; not recorded ({exc})"
            record = store.load(name).model_copy(update=final)
    record = record or store.load(name)
    log.info(
        "job.end",
        status=record.status,
        exit_code=record.exit_code,
        reason=record.reason,
        seconds=record.duration,
    )
    return record


def cancel(store: JobStore, name: str, grace: float) -> JobRecord:
    """Cancel a job from any process.

    A job still in Created (its env building) is ended here at once and never
    starts; a Running one is asked of its owner, which ends its processes
    (TERM, then KILL after `grace`) and records the end. Where the owner is
    gone or does not answer, its processes are ended here.
    """
    record = store.reap(name, grace)
    if record.done:
        return record
    ended = store.advance(name, FAILED, expect=CREATED, reason=CANCELLED, finished=now())
    if ended is not None:
        return ended
    store.cancel_path(name).touch()
    deadline = time.monotonic() + grace + 5
    while time.monotonic() < deadline:
        record = store.load(name)
        if record.done or record.owner is None or record.owner.gone():
            break
        time.sleep(0.05)
    record = store.reap(name, grace)
    if not record.done:  # the owner does not answer: end what it runs, and say so
        end_tree(record.tag, grace)
        record = store.advance(name, FAILED, reason=CANCELLED, finished=now()) or record
    return store.load(name)
