"""What a lock pins, whatever its kind: packages, their files (URL and sha256), and which
of a package's wheels an interpreter installs. The kinds of lock (`lockfile.py`, and
`conda.py` for conda's) build on these; this module imports neither.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
