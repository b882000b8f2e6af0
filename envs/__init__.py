"""The environment cache: package sets solved once, reused by every job that asks again.

This package knows nothing about jobs; `runner` builds on it, never the reverse.

The names below are imported on first use (PEP 562), so a command that only
reads a spec or an error does not pay for the cache, its lock formats and its
logging at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from envs import formats as formats
    from envs.cache import Env as Env
    from envs.cache import EnvCache as EnvCache
    from envs.cache import EnvInUseError as EnvInUseError
    from envs.errors import BuildError as BuildError
    from envs.errors import DuplicateRequirementError as DuplicateRequirementError
    from envs.errors import EnvError as EnvError
    from envs.errors import EnvNotFoundError as EnvNotFoundError
    from envs.errors import InvalidRequirementError as InvalidRequirementError
    from envs.spec import EnvSpec as EnvSpec
    from envs.spec import IndexConfig as IndexConfig
    from envs.spec import Interpreter as Interpreter

_WHERE = {
    "BuildError": "envs.errors",
    "DuplicateRequirementError": "envs.errors",
    "Env": "envs.cache",
    "EnvCache": "envs.cache",
    "EnvError": "envs.errors",
    "EnvInUseError": "envs.cache",
    "EnvNotFoundError": "envs.errors",
    "EnvSpec": "envs.spec",
    "IndexConfig": "envs.spec",
    "Interpreter": "envs.spec",
    "InvalidRequirementError": "envs.errors",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if name == "formats":
        return importlib.import_module("envs.formats")
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
