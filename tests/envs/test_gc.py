from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

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


def test_a_hit_refreshes_last_used(cache: EnvCache, make_spec) -> None:
    env = cache.ensure(make_spec(["tiny-pkg"]))
    _age(cache, env.key, 10 * 86400)
    cache.ensure(make_spec(["tiny-pkg"]))
    assert collect(cache, older_than=timedelta(days=7)).removed == []


HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def test_gc_removes_dead_builds_and_never_a_live_one(cache: EnvCache) -> None:
    """Liveness is the builder's lock, not its pid: a pid from another namespace means nothing."""
    dead = cache.tmp_dir / "build-aaaa-1-00000000"  # pid 1 is alive here, its builder is not
    live = cache.tmp_dir / "build-bbbb-999999999-00000000"  # no such pid here, yet it builds
    for folder in (dead, live):
        (folder / "lib").mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(live)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        collect(cache)
        assert not dead.exists()
        assert (live / "lib").is_dir()
    finally:
        holder.kill()
        holder.communicate()
    collect(cache)
    assert not live.exists()


def test_gc_tolerates_folders_vanishing_while_it_looks(
    cache: EnvCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = cache.tmp_dir / "resolve-cccc-1-00000000"
    gone.mkdir()
    real_iterdir = Path.iterdir

    def iterdir_then_vanish(self: Path) -> Iterator[Path]:
        entries = list(real_iterdir(self))
        if self == cache.tmp_dir:
            shutil.rmtree(gone)  # a builder finished between the listing and the stat
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", iterdir_then_vanish)
    collect(cache)  # no FileNotFoundError


def test_a_build_folder_something_still_writes_into_is_moved_aside(cache: EnvCache) -> None:
    """The child of a killed build may still write: the next build must not trip over it."""
    stale = cache.tmp_dir / "build-dddd-1-00000000"
    stale.mkdir()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITE_FOREVER, str(stale)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        for _ in range(20):  # whenever it happens, the name is free and nothing raises
            stale.mkdir(exist_ok=True)
            cache.discard(stale)
            assert not stale.exists()
    finally:
        writer.kill()
        writer.communicate()


WRITE_FOREVER = (  # as an unpacker does: into the folder it was given, never re-creating it
    "import os, sys, itertools\n"
    "print('writing', flush=True)\n"
    "for i in itertools.count():\n"
    "    try:\n"
    "        d = os.path.join(sys.argv[1], f'd{i % 50}')\n"
    "        os.mkdir(d) if not os.path.isdir(d) else None\n"
    "        open(os.path.join(d, f'f{i}'), 'w').close()\n"
    "    except OSError:\n"
    "        pass\n"
)
