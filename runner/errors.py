"""The runner's user-facing errors: printed without a traceback, with the fix in the message."""

from __future__ import annotations


class RunnerError(Exception):
    """A mistake the user can fix. Anything else that escapes is a bug."""


class InvalidJobError(RunnerError, ValueError):
    """A job specification refused at the edge, before anything is built or spawned."""


class JobNotFoundError(RunnerError, LookupError):
    """No job record with that name."""


class CorruptRecordError(RunnerError):
    """A job's record on disk cannot be read (truncated, edited by hand)."""


class LogMissingError(RunnerError):
    """A job's log file is gone."""


class StateDirError(RunnerError):
    """The state or cache directory cannot be used (not a directory, read-only, ...)."""


class DataDirError(RunnerError):
    """The data cache jobs share cannot be made or written."""
