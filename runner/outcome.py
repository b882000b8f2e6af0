"""How a job ended, typed: its `Cause`, from which the exit code and the words a person reads
derive. Nothing compares reason strings: the reason is for people, the cause for code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.store import JobRecord, Status, StepRecord


class Cause(StrEnum):
    """Why a job is final. Complete jobs have `EXITED`; every other cause is a Failed job's."""

    EXITED = "exited"
    """Every step ended by itself with code 0."""
    FAILED = "failed"
    """A step ended by itself with another code: the job's own failure."""
    LIMIT = "limit"
    """A limit the job asked for ended it (the kernel's accounting says so)."""
    SANDBOX = "sandbox"
    """Its sandbox could not be set up (a cgroup, a Landlock scope): it never ran."""
    CANCELLED = "cancelled"
    """`runner cancel`, `delete_job`, Ctrl-C or SIGTERM of its owner."""
    TIMED_OUT = "timed out"
    """Its timeout passed, running or waiting for devices."""
    RUNNER_EXITED = "runner exited"
    """Its owner (the process that ran it) ended first."""
    NOT_STARTED = "not started"
    """Its first process could not be spawned."""
    ENVIRONMENT = "environment"
    """Its environment could not be built."""
    RECORDS = "records"
    """Its log or record could not be written (a full disk)."""
    RUNNER_ERROR = "runner error"
    """A fault of the runner itself (a bug): the log holds its traceback."""


EXIT_CODES = {Cause.EXITED: 0, Cause.CANCELLED: 130, Cause.TIMED_OUT: 124}
"""The exit code of `runner train` / `runner wait` per cause, as a shell's (Ctrl-C: 130) and
coreutils' `timeout` (124) would give; a step's own failure passes its code on."""


@dataclass(frozen=True)
class Outcome:
    """How a job ended, before it is recorded: the one final state, its cause and reason."""

    status: Status
    cause: Cause
    reason: str | None = None
    exit_code: int | None = None
    steps: tuple[StepRecord, ...] = ()
    interrupted: bool = False
    """Ended by Ctrl-C or SIGTERM of the owner, which is raised again once recorded."""


def cause_of(record: JobRecord) -> Cause | None:
    """The record's cause; for a record written before causes were, read from its reason."""
    if record.cause is not None or not record.done:
        return record.cause
    if record.status == "Complete":
        return Cause.EXITED
    reason = record.reason or ""
    for cause in (Cause.CANCELLED, Cause.RUNNER_EXITED):
        if reason == cause.value:
            return cause
    if reason.startswith("timed out"):
        return Cause.TIMED_OUT
    return Cause.FAILED


def exit_code(record: JobRecord) -> int:
    """What a command that waited for the job exits with: 0 when Complete, 130 cancelled, 124
    timed out, a step's own code when it failed (128+N for signal N), else 1."""
    cause = cause_of(record)
    if cause in EXIT_CODES:
        return EXIT_CODES[cause]
    code = record.exit_code or 1
    return code if code > 0 else 128 - code
