"""Supervise a job's steps to one outcome: wait for them, stop them early on cancel,
timeout, a failed node or a log that cannot be written, end them all, and say why."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner import launch
from runner.cgroup import ENTER_FAILED, JobCgroup
from runner.logs import JobLog
from runner.process import Process
from runner.sandbox import SandboxPolicy, landlock
from runner.settings import RunnerSettings
from runner.spec import JobSpec
from runner.steps import start_steps
from runner.store import COMPLETE, FAILED, JobRecord, JobStore, ProcessRef, Status, StepRecord
from runner.units import format_size

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

CANCELLED = "cancelled"

SANDBOX_FAILED = (ENTER_FAILED, landlock.FAILED)
"""Exit codes of a step's wrapper that could not set up its sandbox (a cgroup, a Landlock scope)."""


@dataclass(frozen=True)
class Outcome:
    """How a job ended, before it is recorded: the one final state and its reason."""

    status: Status
    reason: str | None = None
    exit_code: int | None = None
    steps: tuple[StepRecord, ...] = ()
    interrupted: bool = False
    """Ended by Ctrl-C or SIGTERM of the owner, which is raised again once recorded."""


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


def run_steps(
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
        start_steps(store, job, env_dir, log, settings, running, refused, cgroups, holds)
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
