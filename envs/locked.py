"""What a lock pins, whatever its kind: packages, their files (URL and sha256), which of a
package's wheels an interpreter installs, and `LockKind`, the interface every kind of lock
is a unit behind (`pylock.py`, `hashed.py`, `conda.py`; `lockfile.Lock` holds a text and
its kind). This module imports none of them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from packaging.markers import Marker
from packaging.tags import compatible_tags, cpython_tags, platform_tags, sys_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from envs.errors import EnvError
from envs.spec import Interpreter


class LockError(EnvError):
    """A lock that cannot be read, or that is for another interpreter or platform."""


@dataclass(frozen=True)
class LockedFile:
    """One installable file of a package: where it is, and its sha256."""

    url: str | None
    sha256: str | None

    @property
    def filename(self) -> str:
        return (self.url or "").rsplit("/", 1)[-1]

    @property
    def uri(self) -> str:
        """`url` as a URL: a pylock `path` becomes a `file://` URL."""
        url = self.url or ""
        return url if "://" in url else Path(url).resolve().as_uri()


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str
    files: tuple[LockedFile, ...]
    marker: str | None = None
    direct: bool = False
    """Named by its file (`pkg @ URL`), not found in an index: only that URL holds it."""
    manager: Literal["pypi", "conda"] = "pypi"

    def file_for(self, interpreter: Interpreter) -> LockedFile:
        """What to install: a wheel for the interpreter's tags, else any wheel, else the sdist."""
        supported = tags_for(interpreter)
        wheels = [f for f in self.files if f.filename.endswith(".whl")]
        fitting = [w for w in wheels if wheel_tags(w.filename) & supported]
        return (fitting or wheels or list(self.files))[0]


class LockKind(Protocol):
    """One kind of lock, as it is installed: how its text lists packages, which env it
    makes, the line uv installs a package from, and what it refuses."""

    name: str
    filename: str
    """The name it is kept under, in the env it made."""
    conda: bool
    """Its conda packages are rattler's, into a prefix of their own; uv adds its PyPI
    packages to that prefix's python."""

    def packages(self, text: str, base: str | None) -> list[LockedPackage]:
        """Every package it locks; one not pinned exactly (version and hash) is refused.
        `base`: the folder of the file it came from (a relative path is relative to it)."""
        ...

    def key(self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter) -> str:
        """The identity of the env it makes on `interpreter`: its meaning, never its bytes."""
        ...

    def check_for(
        self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter
    ) -> None:
        """Refuse it (LockError) where it is for another Python or platform, naming both."""
        ...

    def install_line(self, package: LockedPackage, interpreter: Interpreter) -> str:
        """The hashed requirement uv installs `package` from."""
        ...


def hashed_line(package: LockedPackage) -> str:
    """`name @ URL ; marker --hash=sha256:...` (`name==version` where it has no URL), every
    file's hash: a package as a line of a hashed requirements file."""
    hashes = " ".join(f"--hash=sha256:{f.sha256}" for f in package.files)
    url = package.files[0].url
    pin = f" @ {url}" if url else f"=={package.version}"
    marker = f" ; {package.marker}" if package.marker else ""
    return f"{package.name}{pin}{marker} {hashes}\n"


def here(interpreter: Interpreter) -> str:
    return (
        f"this interpreter is {interpreter.implementation} {interpreter.version} "
        f"on {interpreter.platform}"
    )


def check_wheels(packages: Sequence[LockedPackage], interpreter: Interpreter) -> None:
    """Refuse packages locked as wheels none of which installs on `interpreter` (those its
    marker leaves out, or with an sdist, are not refused: an sdist builds anywhere)."""
    supported = tags_for(interpreter)
    if not supported:
        return  # the tags of this interpreter are not known here; uv will check them
    for package in packages:
        if package.marker and not Marker(package.marker).evaluate():
            continue  # not installed here
        wheels = [f for f in package.files if f.filename.endswith(".whl")]
        if len(wheels) < len(package.files) or not wheels:
            continue  # an sdist can be built anywhere
        tags = set().union(*(wheel_tags(w.filename) for w in wheels))
        if tags and not tags & supported:
            names = ", ".join(sorted(w.filename for w in wheels))
            raise LockError(
                f"the lock's {package.name} {package.version} is for another platform "
                f"({names}); {here(interpreter)}"
            )


def tags_for(interpreter: Interpreter) -> frozenset[Any]:
    """The wheel tags `interpreter` installs: the env's Python, not the runner's own."""
    if interpreter == Interpreter.current():
        return _supported_tags()
    major, minor = (int(part) for part in interpreter.version.split(".")[:2])
    return _tags_of(interpreter.implementation, (major, minor))


@functools.cache
def _supported_tags() -> frozenset[Any]:
    """The wheel tags this interpreter installs (computed once: it is not cheap)."""
    return frozenset(sys_tags())


@functools.cache
def _tags_of(implementation: str, version: tuple[int, int]) -> frozenset[Any]:
    """Another CPython's tags on this machine: its version and ABI, this machine's platforms."""
    if implementation != "cpython":
        return frozenset()  # unknown: the caller falls back to any wheel, and uv checks
    abi = f"cp{version[0]}{version[1]}"
    platforms = list(platform_tags())
    return frozenset(
        [
            *cpython_tags(version, abis=[abi], platforms=platforms),
            *compatible_tags(version, interpreter=abi, platforms=platforms),
        ]
    )


def wheel_tags(filename: str) -> set[Any]:
    try:
        return set(parse_wheel_filename(filename)[3])
    except InvalidWheelFilename:
        return set()
