"""Eviction by age of last use and by total size; never touches an env in use.

An env is in use while any job holds its shared lease; eviction asks for the
exclusive lock without waiting and skips the env when it cannot have it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from packaging.utils import canonicalize_name

from envs import bytecode, condacache, formats
from envs.cache import Env, EnvCache, EnvInUseError
from envs.errors import EnvNotFoundError
from envs.files import flocked, held
from envs.log import get_logger

log = get_logger("envs.gc")

STALE_TMP_SECONDS = 86400.0


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)
    in_use: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    """What the cache's folders take less on disk now: measured, not added up."""
    kept_bytes: int = 0
    """What they take now: each file once, however many envs link it."""
    downloads_cleaned: list[str] = field(default_factory=list)
    """Packages no env holds any more, taken out of uv's download cache."""
    conda_cleaned: list[str] = field(default_factory=list)
    """Conda packages no env holds any more, taken out of rattler's package cache."""


Inode = tuple[int, int]


@dataclass
class Usage:
    """The cache's files on disk, each inode once, and who holds each: an env (its key), a
    package unpacked in uv's cache (`uv:NAME`), or the cache itself (`cache`). A compiled
    module in the bytecode store is held by the envs that link it, as gc prunes the rest."""

    sizes: dict[Inode, int] = field(default_factory=dict)
    holders: dict[Inode, int] = field(default_factory=dict)
    held: dict[str, set[Inode]] = field(default_factory=dict)
    released: int = 0
    """The bytes whose last holder let go."""

    @property
    def on_disk(self) -> int:
        return sum(self.sizes.values())

    @property
    def total(self) -> int:
        """What the cache takes once what was let go is gone."""
        return self.on_disk - self.released

    def add(self, root: Path, holder: str | None, *, alone: bool = False) -> None:
        """Every file and folder under `root` (`alone`: the folder itself only)."""
        if root.is_file():
            self._add_one(str(root), holder)
            return
        for dirpath, dirs, files in os.walk(root):
            if alone:
                dirs.clear()
            for name in (".", *([] if alone else files)):  # folders take blocks too
                self._add_one(os.path.join(dirpath, name), holder)  # noqa: PTH118 - hot loop

    def _add_one(self, path: str, holder: str | None) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        ino = (st.st_dev, st.st_ino)
        self.sizes[ino] = st.st_blocks * 512  # what it takes on disk, as du says
        mine = self.held.setdefault(holder, set()) if holder else None
        if mine is not None and ino not in mine:
            mine.add(ino)
            self.holders[ino] = self.holders.get(ino, 0) + 1

    def release(self, holder: str) -> None:
        """`holder` lets go of its files (an env removed, a package cleaned)."""
        for ino in self.held.pop(holder, set()):
            self.holders[ino] -= 1
            if not self.holders[ino]:
                self.released += self.sizes[ino]


def usage(cache: EnvCache) -> Usage:
    """What the cache's own folders hold (a data cache kept under its root is not its)."""
    found = Usage()
    if cache.envs_dir.is_dir():
        for env in cache.envs_dir.iterdir():
            found.add(env, env.name)
    downloads = cache.uv.cache_dir
    if downloads.is_dir():
        for bucket in downloads.iterdir():
            if not bucket.name.startswith("archive-"):  # metadata, pointers: small
                found.add(bucket, "cache")
                continue
            for unpacked in bucket.iterdir():  # one unpacked wheel each
                name = _package_of(unpacked)
                found.add(unpacked, f"uv:{name}" if name else "cache")
    for package in condacache.packages(cache.conda_dir):
        found.add(package, f"conda:{package.name}")
    found.add(cache.objects_dir, None)
    for folder in (cache.root, cache.envs_dir, downloads, cache.conda_dir):
        found.add(folder, "cache", alone=True)
    for other in (cache.tmp_dir, cache.root / formats.MEMO, cache.specs_dir):
        found.add(other, "cache")
    for small in cache.conda_dir.glob("*.lock"):  # rattler's, one per package
        found.add(small, "cache")
    for small in (cache.locks_dir, cache.leases_dir):
        found.add(small, "cache")
    return found


def _package_of(unpacked: Path) -> str | None:
    """The name of the wheel uv unpacked here, from its `.dist-info` folder."""
    with contextlib.suppress(OSError):
        for entry in unpacked.iterdir():
            if entry.name.endswith(".dist-info"):
                return canonicalize_name(entry.name.removesuffix(".dist-info").rsplit("-", 1)[0])
    return None


def collect(
    cache: EnvCache,
    *,
    max_size: int | None = None,
    older_than: timedelta | None = None,
    now: datetime | None = None,
    before_removing: Callable[[str], None] | None = None,
) -> GcResult:
    """Remove damaged envs; evict envs unused for `older_than`, then the least recently used
    until the cache takes at most `max_size` on disk (each file once, however many envs link
    it). The downloads of packages no env holds leave uv's cache (else removing an env
    frees nothing: uv's cache links the same files), the conda packages no prefix was
    made of leave rattler's, and the bytecode no env links goes. `before_removing(key)` is
    called before each env goes (the runner ends that env's standbys there)."""
    now = now or datetime.now(UTC)
    result = GcResult()
    envs, damaged = cache.scan()  # least recently used first
    before = usage(cache)
    for problem in damaged:  # never usable: each job that needs one builds it again
        if _remove(cache, problem.key, result, before_removing):
            before.release(problem.key)
    kept = {e.key: _holds(cache, e) for e in envs}
    shared = {h for h in before.held if h.startswith(("uv:", "conda:"))}

    def release_unheld() -> None:  # downloads no env holds go: they free the env's files
        for holder in shared - set().union(*kept.values()):
            before.release(holder)

    release_unheld()
    busy: list[str] = []
    for second in (False, True):  # a base refused while its layers stood goes once they went
        for env in [e for e in envs if e.key in busy] if second else envs:
            too_old = older_than is not None and now - env.last_used > older_than
            too_big = max_size is not None and before.total > max_size
            if env.key not in kept or not (too_old or too_big):
                continue
            if not _remove(cache, env.key, result, before_removing):
                busy.append(env.key)
                continue
            before.release(env.key)
            del kept[env.key]
            release_unheld()
    result.in_use = sorted({k for k in result.in_use if (cache.envs_dir / k).exists()})
    unheld = shared - set().union(*kept.values())
    result.downloads_cleaned = _clean_downloads(
        cache, sorted(h.removeprefix("uv:") for h in unheld if h.startswith("uv:"))
    )
    prefixes = list(cache.envs_dir.iterdir()) if cache.envs_dir.is_dir() else []
    pruned = condacache.prune(cache.conda_dir, prefixes)
    if pruned is None:
        log.info("env.gc.conda_busy", cause="a build is installing conda packages; pruned later")
    result.conda_cleaned = pruned or []
    if bytecode.prune(cache.objects_dir) is None:  # compiled modules no env links any more
        log.info("env.gc.bytecode_busy", cause="a build is linking from the store; pruned later")
    _clean_tmp(cache)
    formats.prune_memo(cache.root / formats.MEMO)
    result.kept_bytes = usage(cache).on_disk
    result.freed_bytes = max(0, before.on_disk - result.kept_bytes)
    return result


def _holds(cache: EnvCache, env: Env) -> set[str]:
    """What an env holds in the caches it was made from: uv's downloads of its PyPI
    packages, and for a conda prefix, rattler's extracted packages."""
    uv = {f"uv:{pin.partition('==')[0]}" for pin in env.meta.packages}
    return uv | {f"conda:{name}" for name in condacache.held_by(cache.envs_dir / env.key)}


def _clean_downloads(cache: EnvCache, names: list[str]) -> list[str]:
    """`uv cache clean NAME...`, unless uv is using its cache now (it would wait for that:
    the next gc cleans them); the names cleaned."""
    if not names:
        return []
    with flocked(cache.uv.cache_dir / ".lock", fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
        if not free:
            log.info("env.gc.downloads_busy", cause="uv is using its cache; cleaned later")
            return []
    cache.uv.run(["cache", "clean", *names], what="cleaning downloads", cwd=cache.root)
    return names


def _remove(
    cache: EnvCache, key: str, result: GcResult, before: Callable[[str], None] | None
) -> bool:
    """Remove one env unless a job uses it; whether it went."""
    if before is not None:
        before(key)
    try:
        cache.remove(key)
    except EnvInUseError:
        result.in_use.append(key)
        log.info("env.gc.in_use", env=key)
        return False
    except EnvNotFoundError:  # removed by someone else meanwhile
        return False
    result.removed.append(key)
    return True


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
