"""Eviction by age of last use and by total size; never touches an env in use.

An env is in use while any job holds its shared lease; eviction asks for the
exclusive lock without waiting and skips the env when it cannot have it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from envs import bytecode, formats
from envs.cache import EnvCache, EnvInUseError
from envs.errors import EnvNotFoundError
from envs.files import held
from envs.log import get_logger

log = get_logger("envs.gc")

STALE_TMP_SECONDS = 86400.0


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept_bytes: int = 0


def collect(
    cache: EnvCache,
    *,
    max_size: int | None = None,
    older_than: timedelta | None = None,
    now: datetime | None = None,
) -> GcResult:
    """Remove damaged envs; evict envs unused for `older_than`, then the least recently used
    until under `max_size`."""
    now = now or datetime.now(UTC)
    result = GcResult()
    envs, damaged = cache.scan()  # least recently used first
    for problem in damaged:  # never usable: each job that needs one builds it again
        _remove(cache, problem.key, result)
    total = sum(e.meta.size_bytes for e in envs)
    for env in envs:
        too_old = older_than is not None and now - env.last_used > older_than
        too_big = max_size is not None and total > max_size
        if not (too_old or too_big):
            continue
        total -= _remove(cache, env.key, result)
    result.kept_bytes = total
    if bytecode.prune(cache.objects_dir) is None:  # compiled modules no env links any more
        log.info("env.gc.bytecode_busy", cause="a build is linking from the store; pruned later")
    _clean_tmp(cache)
    formats.prune_memo(cache.root / formats.MEMO)
    return result


def _remove(cache: EnvCache, key: str, result: GcResult) -> int:
    """Remove one env unless a job uses it; the bytes freed."""
    try:
        freed = cache.remove(key)
    except EnvInUseError:
        result.in_use.append(key)
        log.info("env.gc.in_use", env=key)
        return 0
    except EnvNotFoundError:  # removed by someone else meanwhile
        return 0
    result.removed.append(key)
    result.freed_bytes += freed
    return freed


def _clean_tmp(cache: EnvCache) -> None:
    """Remove what builders that died left in tmp/: whatever no live builder holds locked.

    A folder still being made (hidden, not yet locked) is left alone for a day.
    """
    for entry in cache.tmp_dir.iterdir():
        try:
            age = time.time() - entry.stat().st_mtime
        except FileNotFoundError:  # finished (or removed) meanwhile
            continue
        if entry.name.startswith(".") and age < STALE_TMP_SECONDS:
            continue
        if not held(entry):
            cache.discard(entry)
