"""Locks: the exact set of files an environment holds, and the formats users keep them in.

A `Lock` is what uv installs, in one of two forms uv reads natively:

- `pylock`: PEP 751 `pylock.toml` (file URLs, sizes, hashes), what the runner's
  own resolutions produce;
- `requirements`: a hashed requirements file (`name==version --hash=...`, or
  `name @ URL --hash=...`), which is also how a `conda-lock.yml`'s pip
  packages are installed;

and one that uv installs only in part:

- `conda`: the conda packages of a `pixi.lock` or `conda-lock.yml` (installed
  by rattler, `conda.py`) and their PyPI packages (installed by uv).

Installing either checks every hash, and nothing is re-resolved. The
environment made from a lock is identified by the lock's parsed content,
never by its bytes (headers and spacing are not part of the meaning).
Each kind is one unit behind `locked.LockKind`: `pylock.py`, `hashed.py` and
`conda.py`'s `Conda`; a `Lock` is a text and the kind that reads it.
`formats.py` reads and writes the files users keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from envs.hashed import HASHED
from envs.locked import LockedFile, LockedPackage, LockError, LockKind, tags_for
from envs.pylock import PYLOCK
from envs.spec import Interpreter

__all__ = ["FILENAMES", "Kind", "Lock", "LockError", "LockedFile", "LockedPackage", "tags_for"]

if TYPE_CHECKING:
    from envs.conda import CondaSet

Kind = Literal["pylock", "requirements", "conda"]
FILENAMES: dict[Kind, str] = {
    "pylock": PYLOCK.filename,
    "requirements": HASHED.filename,
    "conda": "conda-lock.json",  # conda.Conda.filename, without importing pydantic's models
}
"""What each kind of lock is kept as, in the env it made."""


def unit(kind: Kind) -> LockKind:
    """The unit that reads, keys, checks and installs locks of `kind`."""
    if kind == "conda":
        from envs.conda import CONDA  # pydantic's models: only for a conda lock

        return CONDA
    units: dict[str, LockKind] = {"pylock": PYLOCK, "requirements": HASHED}
    return units[kind]


@dataclass(frozen=True)
class Lock:
    """A lock as uv reads it: `text` in the form named by `kind`."""

    text: str
    kind: Kind = "pylock"
    base: str | None = field(default=None, compare=False)
    """The lockfile's folder: PEP 751 resolves a relative `path` against it."""

    @property
    def unit(self) -> LockKind:
        return unit(self.kind)

    @property
    def filename(self) -> str:
        return self.unit.filename

    @cached_property
    def packages(self) -> tuple[LockedPackage, ...]:
        """Every locked package, sorted by name; a lock that is not exact is refused."""
        packages = self.unit.packages(self.text, self.base)
        if self.unit.conda:  # conda's first, then PyPI's, as the set lists them
            return tuple(packages)
        return tuple(sorted(packages, key=lambda p: (p.name, p.version)))

    @cached_property
    def conda(self) -> CondaSet:
        """A conda lock's content (`conda.py`)."""
        if not self.unit.conda:
            raise LockError(f"a {self.kind} lock holds no conda packages")
        from envs.conda import CondaSet

        return CondaSet.parse(self.text)

    def pins(self) -> list[str]:
        """`name==version` for each locked package, sorted: what a human wants to read."""
        return [f"{p.name}=={p.version}" for p in self.packages]

    def pip_pins(self) -> list[str]:
        """The pins of the PyPI packages alone: conda's are no pip requirements
        (`_libgcc_mutex==0.1`, `openssl==1.1.1w`)."""
        return [f"{p.name}=={p.version}" for p in self.packages if p.manager == "pypi"]

    def env_key(self, interpreter: Interpreter) -> str:
        """The environment's identity: the locked packages on this interpreter (a conda
        lock holds its own interpreter)."""
        return self.unit.key(self.text, self.packages, interpreter)

    def installable(
        self, interpreter: Interpreter, skip: Callable[[str, str], bool] | None = None
    ) -> str:
        """The lock as the hashed requirements file uv installs it from: its PyPI packages
        (conda's are rattler's), less those `skip` says a base holds."""
        if self.kind == "requirements" and skip is None:
            return self.text
        return "".join(
            self.unit.install_line(package, interpreter)
            for package in self.packages
            if package.manager != "conda"
            and (skip is None or not skip(package.name, package.version))
        )

    def check_for(self, interpreter: Interpreter) -> None:
        """Refuse a lock made for another Python or platform, naming both."""
        self.unit.check_for(self.text, self.packages, interpreter)
