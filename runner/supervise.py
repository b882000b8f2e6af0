"""Supervise a job's steps to one outcome: wait for them, stop them early on cancel,
timeout, a failed node or a log that cannot be written, end them all, and say why."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from runner.logs import JobLog
from runner.outcome import Cause, Outcome
from runner.sandbox import explain
from runner.settings import RunnerSettings
from runner.spec import JobSpec
from runner.steps import Nodes, start_steps
from runner.store import (
    COMPLETE,
    FAILED,
    JobRecord,
    JobStore,
    ProcessRef,
    StepRecord,
    WarmStart,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

    from runner.warm.pool import Warm

CANCELLED = Cause.CANCELLED.value


def run_steps(
    store: JobStore,
    job: JobRecord,
    env_dir: Path,
    log: Logger,
    settings: RunnerSettings,
    joblog: JobLog,
    warm: Warm | None = None,
) -> Outcome:
    """Start every step, supervise them, and end them all, whatever happens meanwhile."""
    spec = job.spec
    policy = spec.sandbox or settings.policy()
    started = time.monotonic()
    nodes = Nodes()
    stopped: tuple[Cause, str] | None = None  # why the runner ended the job early
    interrupted = False
    try:
        start_steps(store, job, env_dir, log, settings, nodes, warm)
        store.update(
            spec.name,
            steps=[
                StepRecord(name=n.step.name, process=ProcessRef.of(n.proc.pid, n.proc.ticks))
                for n in nodes.started
            ],
            warm=_warm_start(nodes),
        )
        stopped = _supervise(store, spec, nodes, log, settings.cancel_grace, started, joblog)
    except KeyboardInterrupt:
        stopped, interrupted = (Cause.CANCELLED, CANCELLED), True
        log.warning("job.cancel", by="interrupt")
    except OSError as exc:
        stopped = (
            Cause.NOT_STARTED,
            f"cannot start {exc.filename or 'the job'}: {exc.strerror or exc}",
        )
        log.error("job.spawn_failed", error=str(exc))
    finally:  # an error of the runner itself goes on up to `execute`, once all is ended
        try:
            nodes.end(settings.cancel_grace)
            codes = []
            for node in nodes.started:
                code = node.proc.wait()
                log.bind(step=node.step.name).info(
                    "job.exit", code=code, seconds=round(time.monotonic() - started, 3)
                )
                codes.append(code)
            # the node that failed on its own (code > 0) is the cause, not those ended after
            # it; where a layer ended one (a limit), that one
            bad = sorted((i for i, c in enumerate(codes) if c), key=lambda i: (codes[i] or 0) < 0)
            said = [(i, explain(policy, nodes.started[i].exit(codes[i]))) for i in bad]
            explained = next(((i, e) for i, e in said if e), None)
        finally:
            nodes.close()  # the cgroups' counters were read above: they go with them
    steps = tuple(
        StepRecord(name=n.step.name, process=None, exit_code=c)
        for n, c in zip(nodes.started, codes, strict=True)
    )
    first = explained[0] if explained else bad[0] if bad else None
    failed = codes[first] if first is not None else (0 if steps else None)
    if stopped is None and first is not None:
        cause, words = explained[1] if explained else (Cause.FAILED, "")
        name = nodes.started[first].step.name
        stopped = cause, f"{name} exited with code {failed}" + (f": {words}" if words else "")
    if stopped is None and not steps:
        stopped = Cause.NOT_STARTED, "no step was started"
    if stopped is None:
        return Outcome(COMPLETE, Cause.EXITED, None, failed, steps)
    return Outcome(FAILED, stopped[0], stopped[1], failed, steps, interrupted)


def _warm_start(nodes: Nodes) -> WarmStart | None:
    preloaded = nodes.started[0].preloaded if nodes.started else None
    return None if preloaded is None else WarmStart(preloaded=list(preloaded))


def _supervise(
    store: JobStore,
    spec: JobSpec,
    nodes: Nodes,
    log: Logger,
    grace: float,
    started: float,
    joblog: JobLog,
) -> tuple[Cause, str] | None:
    """Wait for every step; stop early on cancel, timeout, a node that failed, or a log that
    can no longer be written."""
    cancel = store.cancel_path(spec.name)
    first_failure: float | None = None
    while True:
        codes = [n.proc.poll() for n in nodes.started]
        if all(c is not None for c in codes[1:]):
            nodes.release()  # the other nodes are done with node-0's store
        if all(c is not None for c in codes):
            return None
        if cancel.exists():
            log.warning("job.cancel", by="request")
            return Cause.CANCELLED, CANCELLED
        if joblog.problem is not None:
            return Cause.RECORDS, f"stopped: {joblog.problem}"
        if spec.timeout is not None and time.monotonic() - started > spec.timeout:
            log.warning("job.timeout", timeout=spec.timeout)
            return Cause.TIMED_OUT, f"timed out after {spec.timeout:g} s"
        if any(codes):
            # a failed node takes the job down; give the others a moment to notice on their own
            first_failure = first_failure or time.monotonic()
            if time.monotonic() - first_failure > grace:
                return None
        # wake as soon as a step ends, and at least every 50 ms for cancel and timeout
        next(n for n, c in zip(nodes.started, codes, strict=True) if c is None).proc.exited(0.05)
