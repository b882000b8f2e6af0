"""The environment cache: package sets solved once, reused by every job that asks again.

This package knows nothing about jobs; `runner` builds on it, never the reverse.
"""

from __future__ import annotations

from envs import formats
from envs.cache import Env, EnvCache, EnvInUseError
from envs.errors import (
    BuildError,
    DuplicateRequirementError,
    EnvError,
    EnvNotFoundError,
    InvalidRequirementError,
)
from envs.spec import EnvSpec, IndexConfig, Interpreter

__all__ = [
    "BuildError",
    "DuplicateRequirementError",
    "Env",
    "EnvCache",
    "EnvError",
    "EnvInUseError",
    "EnvNotFoundError",
    "EnvSpec",
    "IndexConfig",
    "Interpreter",
    "InvalidRequirementError",
    "formats",
]
