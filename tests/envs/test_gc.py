from __future__ import annotations

import os
import time
from datetime import timedelta

from envs import EnvCache
from envs.gc import collect


def _age(cache: EnvCache, key: str, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(cache.leases_dir / key, (when, when))


def test_gc_by_age_removes_only_old_envs(cache: EnvCache, make_spec) -> None:
    old = cache.ensure(make_spec(["tiny-pkg==0.5"]))
    new = cache.ensure(make_spec(["tiny-pkg==1.0"]))
    _age(cache, old.key, 10 * 86400)
    result = collect(cache, older_than=timedelta(days=7))
    assert result.removed == [old.key]
    assert [e.key for e in cache.ready()] == [new.key]
    assert result.freed_bytes == old.meta.size_bytes


def test_gc_by_size_evicts_least_recently_used_first(cache: EnvCache, make_spec) -> None:
    a = cache.ensure(make_spec(["tiny-pkg==0.5"]))
    b = cache.ensure(make_spec(["tiny-pkg==1.0"]))
    c = cache.ensure(make_spec(["other-pkg"]))
    _age(cache, a.key, 300)
    _age(cache, b.key, 100)
    _age(cache, c.key, 200)
    budget = b.meta.size_bytes + c.meta.size_bytes
    result = collect(cache, max_size=budget)
    assert result.removed == [a.key]
    result = collect(cache, max_size=b.meta.size_bytes)
    assert result.removed == [c.key]
    assert [e.key for e in cache.ready()] == [b.key]


def test_gc_cleans_leftovers_of_dead_builders(cache: EnvCache) -> None:
    dead = cache.tmp_dir / "build-abc-999999999-0000"
    dead.mkdir()
    mine = cache.tmp_dir / f"build-abc-{os.getpid()}-0000"
    mine.mkdir()
    collect(cache, older_than=timedelta(days=1))
    assert not dead.exists()
    assert mine.exists(), "a build in progress is left alone"


def test_a_hit_refreshes_last_used(cache: EnvCache, make_spec) -> None:
    env = cache.ensure(make_spec(["tiny-pkg"]))
    _age(cache, env.key, 10 * 86400)
    cache.ensure(make_spec(["tiny-pkg"]))
    assert collect(cache, older_than=timedelta(days=7)).removed == []
