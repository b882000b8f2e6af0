"""The higher layer: take a stored job from Created to Complete or Failed.

It decides the environment (a leased cache env), the argv of each step, the
job's environment variables and what counts as success; `process.py` does
the spawning and signalling. Every event and every output line becomes a
record in the job's `log.jsonl`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from structlog.typing import FilteringBoundLogger as Logger

from envs import EnvError
from envs.files import remove_tree
from runner import launch
from runner.logs import Echo, JobLog
from runner.process import Process, end_tree, start_ticks
from runner.sandbox import job_environ
from runner.settings import RunnerSettings
from runner.spec import JobSpec, env_spec, open_cache
from runner.store import (
    COMPLETE,
    FAILED,
    RUNNING,
    JobRecord,
    JobStore,
    ProcessRef,
    Status,
    StepRecord,
    now,
)

CANCELLED = "cancelled"


def this_process() -> ProcessRef:
    return ProcessRef(pid=os.getpid(), ticks=start_ticks(os.getpid()))


def execute(
    store: JobStore,
    name: str,
    settings: RunnerSettings,
    *,
    echo: Echo | None = None,
    cleanup: bool = False,
) -> JobRecord:
    """Run a Created job to its end in this process, which becomes its owner.

    With `cleanup`, the job's scratch (working directory, entry script) is removed
    when it ends; its record and log stay, and so does the shared cached env.
    """
    joblog = JobLog(store.log_path(name), echo)
    log: Logger = joblog.logger.bind(job=name)
    try:
        record = store.update(name, owner=this_process())
        spec = record.spec
        try:
            with open_cache(settings).lease(
                env_spec(settings, spec.requirements, spec.index), log
            ) as env:
                store.update(name, status=RUNNING, started=now(), env_key=env.key)
                return _run_steps(store, record, env.bin_dir, log, settings.cancel_grace)
        except EnvError as exc:
            log.error("env.failed", error=str(exc))
            first = str(exc).splitlines()[0]
            return _finish(store, name, log, FAILED, None, f"environment not built: {first}", [])
    finally:
        joblog.close()
        remove_tree(store.dir(name) / "tmp")
        if cleanup:
            remove_tree(store.workdir(name))
            for scratch in (launch.ENTRY_FILE, launch.ARGS_FILE):
                (store.dir(name) / scratch).unlink(missing_ok=True)


def _on_line(log: Logger, spec: JobSpec) -> Callable[[str, str], None]:
    """Turn each line a step prints into an `output` record, with its rank where known."""
    if spec.framework != "torch":
        return lambda stream, line: log.info("output", stream=stream, line=line)

    def on_line(stream: str, line: str) -> None:
        rank, text = launch.split_rank(line)
        if rank is None:  # torchrun's own lines
            log.info("output", stream=stream, line=text)
        else:
            log.info("output", stream=stream, rank=rank, line=text)

    return on_line


def _run_steps(
    store: JobStore, job: JobRecord, bin_dir: Path, log: Logger, grace: float
) -> JobRecord:
    spec = job.spec
    jobdir = store.dir(spec.name)
    tmp = jobdir / "tmp"
    tmp.mkdir(exist_ok=True)
    environ = job_environ(
        os.environ,
        bin_dir=bin_dir,
        workdir=store.workdir(spec.name),
        tmpdir=tmp,
        job_env={**(launch.torch_environ() if spec.framework == "torch" else {}), **spec.env},
        torch=spec.framework == "torch",
    )
    started = time.monotonic()
    running: list[tuple[launch.Step, Process]] = []
    reason: str | None = None
    try:
        for step in launch.steps(spec, bin_dir, jobdir):
            step_log = log.bind(step=step.name)
            proc = Process(
                step.argv,
                env=environ,
                cwd=store.workdir(spec.name),
                on_line=_on_line(step_log, spec),
                tag=job.tag,
            )
            running.append((step, proc))
            step_log.info("job.start", argv=list(step.argv), pid=proc.pid)
        store.update(
            spec.name,
            steps=[
                StepRecord(name=s.name, process=ProcessRef(pid=p.pid, ticks=p.ticks))
                for s, p in running
            ],
        )
        reason = _supervise(store, spec, running, log, grace, started)
    except KeyboardInterrupt:
        reason = CANCELLED
        log.warning("job.cancel", by="interrupt")
        raise
    except OSError as exc:
        reason = f"cannot start {exc.filename or 'the job'}: {exc.strerror}"
        log.error("job.spawn_failed", error=str(exc))
    finally:
        for _step, proc in running:
            if proc.poll() is None:
                proc.end(grace)
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
            reason = f"{bad[0].name} exited with code {failed}"
        status: Status = COMPLETE if reason is None else FAILED
        record = _finish(store, spec.name, log, status, failed, reason, steps)
    return record


def _supervise(
    store: JobStore,
    spec: JobSpec,
    running: list[tuple[launch.Step, Process]],
    log: Logger,
    grace: float,
    started: float,
) -> str | None:
    """Wait for every step; stop early on cancel, timeout, or a node that failed."""
    cancel = store.cancel_path(spec.name)
    first_failure: float | None = None
    while True:
        codes = [p.poll() for _s, p in running]
        if all(c is not None for c in codes):
            return None
        if cancel.exists():
            log.warning("job.cancel", by="request")
            return CANCELLED
        if spec.timeout is not None and time.monotonic() - started > spec.timeout:
            log.warning("job.timeout", timeout=spec.timeout)
            return f"timed out after {spec.timeout:g} s"
        if any(codes):
            # a failed node takes the job down; give the others a moment to notice on their own
            first_failure = first_failure or time.monotonic()
            if time.monotonic() - first_failure > grace:
                return None
        time.sleep(0.05)


def _finish(
    store: JobStore,
    name: str,
    log: Logger,
    status: Status,
    exit_code: int | None,
    reason: str | None,
    steps: list[StepRecord],
) -> JobRecord:
    record = store.update(
        name, status=status, exit_code=exit_code, reason=reason, finished=now(), steps=steps
    )
    log.info("job.end", status=status, exit_code=exit_code, reason=reason, seconds=record.duration)
    return record


def cancel(store: JobStore, name: str, grace: float) -> JobRecord:
    """Cancel a job from any process: ask its owner, and end the trees if the owner is gone."""
    record = store.load(name)
    if record.done:
        return record
    store.cancel_path(name).touch()
    deadline = time.monotonic() + grace + 5
    while time.monotonic() < deadline:
        record = store.load(name)
        if record.done:
            return record
        if record.owner is None or not record.owner.alive():
            break
        time.sleep(0.05)
    # the owner is gone or unresponsive: end what it left
    end_tree(record.tag, grace)
    if not store.load(name).done:
        store.update(name, status=FAILED, reason=CANCELLED, finished=now())
    return store.load(name)
