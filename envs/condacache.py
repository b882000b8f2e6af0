"""rattler's package cache under the runner's cache root (`conda/`): the extracted conda
packages that prefixes are linked from, one folder per `NAME-VERSION-BUILD`.

Nothing but the runner's builds uses it. A build installs holding the cache's
lock (`conda.lock`, beside it) shared; gc prunes holding it alone and without
waiting, so it never takes a package from under an install. What a prefix was
made of is named in its `conda-meta/NAME-VERSION-BUILD.json`, as the package's
folder is: a package no cached prefix names is held by none, and goes.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from envs.files import flocked, remove_tree

PRUNED = ".pruned-"
"""A package being removed, hidden from rattler by its name."""


def _lock(package_cache: Path) -> Path:
    return package_cache.with_name(f"{package_cache.name}.lock")


def installing(package_cache: Path) -> AbstractContextManager[bool]:
    """Hold while rattler links from the cache: gc prunes nothing meanwhile."""
    package_cache.parent.mkdir(parents=True, exist_ok=True)
    return flocked(_lock(package_cache), fcntl.LOCK_SH)


def held_by(prefix: Path) -> set[str]:
    """The packages a conda prefix was made of (none for a venv)."""
    return {record.stem for record in (prefix / "conda-meta").glob("*.json")}


def packages(package_cache: Path) -> Iterator[Path]:
    """The extracted packages (rattler's own lock files and hidden entries left out)."""
    if package_cache.is_dir():
        yield from (p for p in package_cache.iterdir() if p.is_dir() and p.name[0] != ".")


def prune(package_cache: Path, prefixes: Iterable[Path]) -> list[str] | None:
    """Remove the packages none of `prefixes` holds (read now, under the lock, when no
    install runs), each with its rattler lock file; their names. None: an install runs,
    nothing was pruned (the next gc does it)."""
    with flocked(_lock(package_cache), fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
        if not alone:
            return None
        for left in package_cache.glob(f"{PRUNED}*"):  # by a gc killed midway
            remove_tree(left)
        keep = set().union(*(held_by(p) for p in prefixes))
        removed = []
        for package in sorted(packages(package_cache)):
            if package.name in keep:
                continue
            # out of sight in one rename first: killed midway, no half package is left
            # under its name for a later install to link from
            package.with_name(f"{package.name}.lock").unlink(missing_ok=True)
            package.rename(package.with_name(f"{PRUNED}{package.name}"))
            remove_tree(package.with_name(f"{PRUNED}{package.name}"))
            removed.append(package.name)
        return removed
