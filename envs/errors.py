"""Errors the environment cache raises.

`EnvError` is the one user-facing base: the CLI prints its message without a
traceback, so every message names the bad value and what would be accepted.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

INSTALL_CONDA = "install the conda extra: pip install 'sandbox-runner[conda]'"
"""What a message about a missing conda library (py-rattler, conda-lock) tells the user."""


class EnvError(Exception):
    """A mistake the user can fix, or a build that failed for a reason they can read."""


class InvalidRequirementError(EnvError, ValueError):
    """A requirement string that PEP 508 cannot parse."""


class DuplicateRequirementError(EnvError, ValueError):
    """The same distribution named twice in one package list."""


class InvalidIndexError(EnvError, ValueError):
    """An index URL that is not a URL."""


class BuildError(EnvError):
    """uv could not resolve or install the package set; carries uv's own message."""


class EnvNotFoundError(EnvError, LookupError):
    """No cached environment matches the key the user gave."""


class CacheDirError(EnvError):
    """The cache's folder cannot be used: not a directory, not writable."""
