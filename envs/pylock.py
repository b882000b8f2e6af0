"""The `pylock` kind of lock: PEP 751 `pylock.toml` (file URLs or paths, sizes, hashes), what
the runner's own resolutions produce. uv installs it from one `name @ URL --hash=...` line
per package, the wheel for the env's interpreter: uv installs a pylock.toml directly too,
but then downloads and unpacks every remote file again on each install, where hashed URL
requirements come from its cache as hardlinks.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from envs.locked import LockedFile, LockedPackage, LockError, check_wheels, here
from envs.spec import Interpreter, digest


def _parsed(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"invalid pylock.toml: {exc}") from None


def _path(path: str | None, base: str | None) -> str | None:
    """A pylock `path`, absolute: a relative one is relative to the lockfile's folder."""
    if path is None or base is None or Path(path).is_absolute():
        return path
    return str(Path(base) / path)


class Pylock:
    name = "pylock"
    filename = "pylock.toml"
    conda = False

    def packages(self, text: str, base: str | None) -> list[LockedPackage]:
        data = _parsed(text)
        if "lock-version" not in data:
            raise LockError("invalid pylock.toml: no lock-version (is this a PEP 751 lock?)")
        packages = []
        for entry in data.get("packages", []):
            # an `archive` is a file named directly (`pkg @ file:///x.whl`), hashed like the rest
            extra = [entry[key] for key in ("sdist", "archive") if key in entry]
            files = [*entry.get("wheels", []), *extra]
            locked = tuple(
                LockedFile(
                    f.get("url") or _path(f.get("path"), base), f.get("hashes", {}).get("sha256")
                )
                for f in files
            )
            if not locked or any(f.sha256 is None for f in locked):
                raise LockError(
                    f"pylock.toml: package {entry.get('name')!r} has a file without a "
                    "sha256 hash; a lock must pin every file"
                )
            packages.append(
                LockedPackage(
                    canonicalize_name(entry["name"]),
                    str(entry.get("version", "")),
                    locked,
                    entry.get("marker"),
                    direct="archive" in entry,
                )
            )
        return packages

    def key(self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter) -> str:
        tables = sorted(  # as it always was: the parsed package tables
            _parsed(text).get("packages", []), key=lambda p: (p["name"], p.get("version", ""))
        )
        return digest({"packages": tables, "interpreter": interpreter.identity()})

    def check_for(
        self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter
    ) -> None:
        try:
            needs = SpecifierSet(_parsed(text).get("requires-python", ""))
        except InvalidSpecifier:
            needs = SpecifierSet()
        if interpreter.version not in needs:
            raise LockError(f"the lock is for Python {needs}; {here(interpreter)}")
        check_wheels(packages, interpreter)

    def install_line(self, package: LockedPackage, interpreter: Interpreter) -> str:
        chosen = package.file_for(interpreter)
        marker = f" ; {package.marker}" if package.marker else ""
        return f"{package.name} @ {chosen.uri}{marker} --hash=sha256:{chosen.sha256}\n"


PYLOCK = Pylock()
