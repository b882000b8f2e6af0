"""What a job is, validated once at the edge, and the EnvSpec it needs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from packaging.requirements import Requirement

from envs import EnvCache, EnvSpec, IndexConfig, Interpreter
from envs.requirements import parse_all
from runner.settings import RunnerSettings


def env_spec(
    settings: RunnerSettings,
    requirements: Sequence[str | Requirement],
    index: IndexConfig | None = None,
) -> EnvSpec:
    """The env for a package set: job index options over settings over pip's variables."""
    reqs = [r if isinstance(r, Requirement) else parse_all([r])[0] for r in requirements]
    return EnvSpec(
        requirements=tuple(reqs),
        index=IndexConfig.layered(index or IndexConfig(), settings.index(os.environ)),
        interpreter=Interpreter.at(settings.python),
    )


def open_cache(settings: RunnerSettings) -> EnvCache:
    return EnvCache(settings.cache_dir, uv_binary=settings.uv)
