from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from envs import Env, EnvCache, IndexConfig
from envs.files import flocked
from envs.gc import collect, usage
from tests.wheelhouse import make_wheel


def _age(cache: EnvCache, key: str, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(cache.leases_dir / key, (when, when))


def du(path: Path) -> int:
    """What `du` says a folder takes on disk, in bytes (each file once)."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def test_gc_by_age_removes_only_old_envs_and_says_what_the_disk_got_back(
    cache: EnvCache, make_spec
) -> None:
    old = cache.ensure(make_spec(["tiny-pkg==0.5"]))
    new = cache.ensure(make_spec(["tiny-pkg==1.0"]))
    _age(cache, old.key, 10 * 86400)
    before = du(cache.root)
    result = collect(cache, older_than=timedelta(days=7))
    assert result.removed == [old.key]
    assert [e.key for e in cache.ready()] == [new.key]
    assert result.freed_bytes == before - du(cache.root) > 0  # measured, not added up
    assert abs(result.kept_bytes - du(cache.root)) <= 64 * 1024  # du counts its top folders


def test_gc_by_size_evicts_least_recently_used_first(cache: EnvCache, make_spec) -> None:
    a = cache.ensure(make_spec(["tiny-pkg==0.5"]))
    b = cache.ensure(make_spec(["tiny-pkg==1.0"]))
    c = cache.ensure(make_spec(["other-pkg"]))
    _age(cache, a.key, 300)
    _age(cache, b.key, 100)
    _age(cache, c.key, 200)
    result = collect(cache, max_size=collect(cache).kept_bytes - 1)
    assert result.removed == [a.key]
    result = collect(cache, max_size=result.kept_bytes - 1)
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


def _two_apps(cache: EnvCache, make_spec, tmp_path: Path) -> tuple[Env, Env]:
    """Two full envs (neither holds the other's packages) sharing a 4 MB download."""
    house = tmp_path / "house"
    make_wheel(house, "big-dep", "1.0", body="# " + "x" * 4_000_000 + "\n")
    make_wheel(house, "app-one", "1.0", deps=["big-dep"])
    make_wheel(house, "app-two", "1.0", deps=["big-dep"])
    index = IndexConfig(find_links=(str(house),), no_index=True)
    one = cache.ensure(make_spec(["app-one"], index))
    two = cache.ensure(make_spec(["app-two"], index))
    assert one.meta.base_env is None and two.meta.base_env is None
    _age(cache, one.key, 200)
    _age(cache, two.key, 100)
    return one, two


def downloads(cache: EnvCache) -> set[str]:
    """The packages unpacked in uv's cache."""
    return {p.name.split("-")[0] for p in cache.uv.cache_dir.glob("archive-*/*/*.dist-info")}


def test_envs_sharing_a_download_count_it_once_and_it_goes_with_the_last_of_them(
    cache: EnvCache, make_spec, tmp_path: Path
) -> None:
    one, two = _two_apps(cache, make_spec, tmp_path)
    whole = du(cache.root)  # du counts a file once, however many links it has
    assert abs(usage(cache).on_disk - whole) <= 64 * 1024  # as gc does: not env by env
    assert collect(cache, max_size=whole).removed == []  # so nothing needs to go

    result = collect(cache, max_size=collect(cache).kept_bytes - 1)
    assert result.removed == [one.key] and result.downloads_cleaned == ["app-one"]
    assert downloads(cache) == {"app_two", "big_dep"}  # app-two's env still links big-dep
    assert result.freed_bytes < 1_000_000

    result = collect(cache, max_size=0)
    assert result.removed == [two.key] and result.downloads_cleaned == ["app-two", "big-dep"]
    assert downloads(cache) == set() and result.freed_bytes > 4_000_000
    assert du(cache.root) < whole - 4_000_000  # the disk got it back


def test_downloads_uv_is_using_are_left_for_the_next_gc(
    cache: EnvCache, make_spec, tmp_path: Path
) -> None:
    _two_apps(cache, make_spec, tmp_path)
    with flocked(cache.uv.cache_dir / ".lock", fcntl.LOCK_SH):  # a build is running
        result = collect(cache, max_size=0)
    assert len(result.removed) == 2 and result.downloads_cleaned == []
    assert downloads(cache) == {"app_one", "app_two", "big_dep"}  # not waited for
    assert collect(cache).downloads_cleaned == ["app-one", "app-two", "big-dep"]
    assert downloads(cache) == set()


def test_evicting_an_env_counts_its_downloads_as_freed_so_no_more_goes_than_needed(
    cache: EnvCache, make_spec, tmp_path: Path
) -> None:
    house = tmp_path / "house"
    make_wheel(house, "big-dep", "1.0", body="# " + "x" * 4_000_000 + "\n")
    make_wheel(house, "app-big", "1.0", deps=["big-dep"])
    make_wheel(house, "app-a", "1.0")
    make_wheel(house, "app-b", "1.0")
    index = IndexConfig(find_links=(str(house),), no_index=True)
    big, a, b = (cache.ensure(make_spec([n], index)) for n in ("app-big", "app-a", "app-b"))
    for env, age in ((big, 300), (a, 200), (b, 100)):
        _age(cache, env.key, age)
    # over by 1 MB: the big env's own links are small, its downloads are what frees space
    result = collect(cache, max_size=collect(cache).kept_bytes - 1_000_000)
    assert result.removed == [big.key] and [e.key for e in cache.ready()] == [a.key, b.key]
    assert result.downloads_cleaned == ["app-big", "big-dep"] and result.freed_bytes > 4_000_000
