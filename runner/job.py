"""The higher layer: take a stored job from Created to Complete or Failed.

It checks what would stop a job before anything is made, leases its environment
(a cached env) and its devices, and records the one final state; `steps.py`
starts the steps in their sandboxes, `supervise.py` runs them to an outcome and
`process.py` spawns and signals. Every event and every output line becomes a
record in the job's `log.jsonl`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import TYPE_CHECKING, Any

from envs import EnvError
from envs.files import dir_problem, remove_tree
from runner import launch
from runner.errors import DataDirError, InvalidJobError, JobNotFoundError, StateDirError
from runner.gpus import Gpu
from runner.leases import Lease, Leases, Stopped, Wanted
from runner.logs import Echo, JobLog
from runner.outcome import Cause, Outcome
from runner.process import end_tree, start_ticks
from runner.sandbox import Host, SandboxPolicy, check, identity
from runner.sandbox.files import emptied, holds_private
from runner.settings import RunnerSettings
from runner.spec import JobSpec, env_spec, open_cache
from runner.steps import data_cache, shared_paths
from runner.store import (
    CREATED,
    FAILED,
    RUNNING,
    JobRecord,
    JobStore,
    ProcessRef,
    now,
)
from runner.supervise import CANCELLED, run_steps

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

    from runner.warm.pool import Warm


def preflight(store: JobStore, settings: RunnerSettings, spec: JobSpec) -> None:
    """What would stop a job, checked before it is recorded or anything is built.

    A strict sandbox that cannot be had here, a state dir, cache or data cache
    that cannot be written: each raises with one line naming it.
    """
    policy = spec.sandbox or settings.policy()
    check(policy, settings.bwrap)
    _check_readable(spec, settings, policy)
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
    data = data_cache(settings, policy)
    problem = data and dir_problem(data)
    if problem:
        raise DataDirError(
            f"cannot use the data cache at {data}: {problem}; "
            "set RUNNER_DATA_DIR to another folder, or run with --no-data-cache"
        )


def _check_readable(spec: JobSpec, settings: RunnerSettings, policy: SandboxPolicy) -> None:
    """Root's job runs as its own user: the script it runs must be that user's to read, and
    what it mounts to read or write (`--mount SRC:rw`) that user's to read or write."""
    user = identity.for_job(policy, Host.probe(settings.bwrap))
    if user is None:
        return
    fresh = (*emptied(), settings.state_dir, settings.cache_dir)
    for path in shared_paths(spec):
        if holds_private(path):
            continue  # not shared: the script alone is (files.FileView)
        problem = user.cannot_read(path, fresh)
        if problem:
            raise InvalidJobError(
                f"root's jobs run as {user.name} (uid {user.uid}), and {problem}: make it "
                "readable by others (chmod o+rX), or set RUNNER_JOB_USER=root to run as root"
            )
    for mount in policy.mounts:
        problem = user.cannot_read(mount.source, fresh, write=mount.writable, at=mount.target)
        if problem:
            fix = f"chown {user.name} it" if mount.writable else "chmod o+rX it"
            raise InvalidJobError(
                f"root's jobs run as {user.name} (uid {user.uid}), and the mount {mount}: "
                f"{problem}: {fix}, or set RUNNER_JOB_USER=root to run as root"
            )


def _check_gpus(spec: JobSpec, pool: list[Gpu]) -> None:
    """A job that asks for more GPUs than the pool has, or for one it lacks, never could run."""
    wanted = spec.gpus * spec.num_nodes
    names = ", ".join(f"{g.index} ({g.name})" for g in pool) or "none"
    if wanted > len(pool):
        raise InvalidJobError(
            f"the job asks for {_count(wanted, 'GPU')} ({spec.gpus} per node, "
            f"{_count(spec.num_nodes, 'node')}) and "
            f"the pool has {len(pool)}: {names} (RUNNER_GPUS, CUDA_VISIBLE_DEVICES decide it)"
        )
    for name in spec.gpu_ids:
        if not any(g.is_named(name) for g in pool):
            raise InvalidJobError(f"GPU {name!r} is not in the pool: {names}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def this_process() -> ProcessRef:
    return ProcessRef.of(os.getpid(), start_ticks(os.getpid()))


def execute(
    store: JobStore,
    name: str,
    settings: RunnerSettings,
    *,
    echo: Echo | None = None,
    cleanup: bool = False,
    warm: Warm | None = None,
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
            outcome = _life(store, name, settings, log, joblog, warm)
        except KeyboardInterrupt:
            log.warning("job.cancel", by="interrupt")
            outcome = Outcome(FAILED, Cause.CANCELLED, CANCELLED, interrupted=True)
        except EnvError as exc:
            log.error("env.failed", error=str(exc))
            first = str(exc).splitlines()[0]
            outcome = Outcome(FAILED, Cause.ENVIRONMENT, f"environment not built: {first}")
        except JobNotFoundError:  # deleted meanwhile (`runner rm`): nothing left to record
            raise
        except StateDirError as exc:  # its record cannot be written (a full disk)
            log.error("job.error", error=str(exc))
            outcome = Outcome(FAILED, Cause.RECORDS, str(exc))
        except Exception as exc:  # a bug or an unforeseen fault: never a silent Complete
            outcome = _runner_error(log, exc)
        _remove_scratch(store, name, cleanup)  # before the final state: what a reader sees
        record = _finish(store, name, log, outcome)  # after `wait` is then all there is
        joblog.check()
    finally:
        joblog.close()
        _remove_scratch(store, name, cleanup)  # a way out that did not get so far
    if outcome is not None and outcome.interrupted:
        raise KeyboardInterrupt
    return record


def _remove_scratch(store: JobStore, name: str, cleanup: bool) -> None:
    """TMPDIR always; with `cleanup`, the work folder, HOME and the entry too. What cannot
    be removed (a folder the job made unwritable) stays: the job's end is recorded all the
    same."""
    folders = [store.dir(name) / "tmp"]
    if cleanup:
        folders += [store.workdir(name), store.dir(name) / "home"]
        for scratch in (launch.ENTRY_FILE, launch.ARGS_FILE):
            folders.append(store.dir(name) / scratch)
    for path in folders:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                remove_tree(path)
            else:
                path.unlink(missing_ok=True)


def _runner_error(log: Logger, exc: BaseException) -> Outcome:
    error = f"{type(exc).__name__}: {exc}"
    log.error("job.error", error=error, exc_info=exc)
    return Outcome(FAILED, Cause.RUNNER_ERROR, f"runner error: {error}")


def _life(
    store: JobStore,
    name: str,
    settings: RunnerSettings,
    log: Logger,
    joblog: JobLog,
    warm: Warm | None = None,
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
            if exc.cause == Cause.CANCELLED:
                log.info("job.not_started", status=store.load(name).status)
                return None
            return Outcome(FAILED, exc.cause, str(exc))
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
            return run_steps(store, running, env.path, log, settings, joblog, warm)
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

    def stop() -> Stopped | None:
        if store.load(spec.name).done:
            return Stopped(Cause.CANCELLED, CANCELLED)
        if spec.timeout is not None and time.monotonic() - began > spec.timeout:
            log.warning("job.timeout", timeout=spec.timeout)
            what = " and ".join({"gpu": "GPUs", "cpu": "CPUs"}[k] for k in wanted)
            return Stopped(
                Cause.TIMED_OUT, f"timed out after {spec.timeout:g} s, waiting for {what}"
            )
        return None

    lease = Leases(settings.leases_dir, pools).acquire(
        spec.name, wanted, stop=stop, on_wait=lambda fields: log.info("job.queued", **fields)
    )
    held: dict[str, list[str]] = {kind: list(units) for kind, units in lease.held.items()}
    if held.get("gpu"):  # people know GPUs by index (`runner gpus`, nvidia-smi)
        index = {g.uuid: g.index for g in settings.gpu_pool()}
        held["gpu_index"] = [str(index.get(uuid, "?")) for uuid in held["gpu"]]
    log.info("job.devices", **held)
    return lease


def cpu_pool() -> list[int]:
    """The cores jobs may be given: those this runner may run on."""
    return sorted(os.sched_getaffinity(0))


def _finish(store: JobStore, name: str, log: Logger, outcome: Outcome | None) -> JobRecord:
    """Record the job's one final state; a job already final (cancelled meanwhile) stays so."""
    record = None
    if outcome is not None:
        final: dict[str, Any] = {
            "status": outcome.status,
            "cause": outcome.cause,
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
    ended = store.advance(
        name, FAILED, expect=CREATED, reason=CANCELLED, cause=Cause.CANCELLED, finished=now()
    )
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
        ended = store.advance(name, FAILED, reason=CANCELLED, cause=Cause.CANCELLED, finished=now())
        record = ended or record
    return store.load(name)
