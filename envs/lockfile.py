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
`formats.py` reads and writes the files users keep.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from envs.locked import LockedFile, LockedPackage, LockError, tags_for, wheel_tags
from envs.spec import Interpreter, digest

__all__ = ["FILENAMES", "Kind", "Lock", "LockError", "LockedFile", "LockedPackage", "tags_for"]

if TYPE_CHECKING:
    from envs.conda import CondaSet

Kind = Literal["pylock", "requirements", "conda"]
FILENAMES: dict[Kind, str] = {
    "pylock": "pylock.toml",
    "requirements": "requirements.txt",
    "conda": "conda-lock.json",
}


def _requirement_entries(text: str) -> list[tuple[int, str, list[str]]]:
    """(line number, requirement, hashes) for each entry of a requirements file."""
    entries = []
    logical, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not logical:
            start = number
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            words = logical.split()
            hashes = [w.removeprefix("--hash=") for w in words if w.startswith("--hash=")]
            options = [w for w in words if w.startswith("-") and not w.startswith("--hash=")]
            if options:
                raise LockError(f"line {start}: option {options[0]!r} is not allowed in a lock")
            req = " ".join(w for w in words if not w.startswith("--hash="))
            entries.append((start, req, hashes))
        logical = ""
    return entries


def _version_from_url(url: str) -> str:
    filename = url.rsplit("/", 1)[-1]
    try:
        return str(parse_wheel_filename(filename)[1])
    except InvalidWheelFilename:
        return filename.rsplit("-", 1)[-1].removesuffix(".tar.gz").removesuffix(".zip")


@dataclass(frozen=True)
class Lock:
    """A lock as uv reads it: `text` in the form named by `kind`."""

    text: str
    kind: Kind = "pylock"
    base: str | None = field(default=None, compare=False)
    """The lockfile's folder: PEP 751 resolves a relative `path` against it."""

    @property
    def filename(self) -> str:
        return FILENAMES[self.kind]

    @cached_property
    def data(self) -> dict[str, Any]:
        """The parsed `pylock.toml` ({} for a requirements lock)."""
        if self.kind != "pylock":
            return {}
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise LockError(f"invalid pylock.toml: {exc}") from None

    @cached_property
    def packages(self) -> tuple[LockedPackage, ...]:
        """Every locked package, sorted by name; a lock that is not exact is refused."""
        if self.kind == "conda":
            return tuple(self.conda.packages())
        packages = self._pylock() if self.kind == "pylock" else self._requirements()
        return tuple(sorted(packages, key=lambda p: (p.name, p.version)))

    @cached_property
    def conda(self) -> CondaSet:
        """A conda lock's content (`conda.py`)."""
        if self.kind != "conda":
            raise LockError(f"a {self.kind} lock holds no conda packages")
        from envs.conda import CondaSet

        return CondaSet.parse(self.text)

    def _pylock(self) -> list[LockedPackage]:
        if "lock-version" not in self.data:
            raise LockError("invalid pylock.toml: no lock-version (is this a PEP 751 lock?)")
        packages = []
        for entry in self.data.get("packages", []):
            # an `archive` is a file named directly (`pkg @ file:///x.whl`), hashed like the rest
            extra = [entry[key] for key in ("sdist", "archive") if key in entry]
            files = [*entry.get("wheels", []), *extra]
            locked = tuple(
                LockedFile(
                    f.get("url") or self._path(f.get("path")), f.get("hashes", {}).get("sha256")
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

    def _path(self, path: str | None) -> str | None:
        """A pylock `path`, absolute: a relative one is relative to the lockfile's folder."""
        if path is None or self.base is None or Path(path).is_absolute():
            return path
        return str(Path(self.base) / path)

    def _requirements(self) -> list[LockedPackage]:
        packages = []
        for number, text, hashes in _requirement_entries(self.text):
            try:
                req = Requirement(text)
            except InvalidRequirement as exc:
                raise LockError(f"line {number}: {text!r} is not a requirement: {exc}") from None
            pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
            if not hashes or not (req.url or pins):
                raise LockError(
                    f"line {number}: {text!r} is not locked: a lock pins every package "
                    "with == (or a URL) and --hash"
                )
            bad = [h for h in hashes if not h.startswith("sha256:")]
            if bad:
                raise LockError(f"line {number}: hash {bad[0]!r} is not sha256")
            version = pins[0] if pins else _version_from_url(req.url or "")
            files = tuple(LockedFile(req.url, h.removeprefix("sha256:")) for h in hashes)
            marker = str(req.marker) if req.marker else None
            name = canonicalize_name(req.name)
            packages.append(LockedPackage(name, version, files, marker, direct=bool(req.url)))
        return packages

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
        if self.kind == "conda":
            return self.conda.key()
        if self.kind == "pylock":  # as it always was: the parsed package tables
            packages = sorted(
                self.data.get("packages", []), key=lambda p: (p["name"], p.get("version", ""))
            )
            return digest({"packages": packages, "interpreter": interpreter.identity()})
        packages = [asdict(p) for p in self.packages]
        return digest({"requirements": packages, "interpreter": interpreter.identity()})

    def installable(
        self, interpreter: Interpreter, skip: Callable[[str, str], bool] | None = None
    ) -> str:
        """The lock as the hashed requirements file uv installs it from.

        A `pylock` becomes one `name @ URL --hash=...` line per package (the
        wheel for this machine): uv installs a pylock.toml directly too, but then
        downloads and unpacks every remote file again on each install, where
        hashed URL requirements come from its cache as hardlinks.
        """
        if self.kind == "requirements" and skip is None:
            return self.text
        lines = []
        for package in self.packages:
            if skip is not None and skip(package.name, package.version):
                continue  # the base holds it
            if package.manager == "conda":
                continue  # rattler's
            if self.kind in ("requirements", "conda"):
                hashes = " ".join(f"--hash=sha256:{f.sha256}" for f in package.files)
                url = package.files[0].url
                pin = f" @ {url}" if url else f"=={package.version}"
                marker = f" ; {package.marker}" if package.marker else ""
                lines.append(f"{package.name}{pin}{marker} {hashes}\n")
                continue
            chosen = package.file_for(interpreter)
            marker = f" ; {package.marker}" if package.marker else ""
            lines.append(f"{package.name} @ {chosen.uri}{marker} --hash=sha256:{chosen.sha256}\n")
        return "".join(lines)

    def check_for(self, interpreter: Interpreter) -> None:
        """Refuse a lock made for another Python or platform, naming both."""
        if self.kind == "conda":
            return  # its platform was checked when it was read, and it holds its own Python
        here = (
            f"this interpreter is {interpreter.implementation} {interpreter.version} "
            f"on {interpreter.platform}"
        )
        try:
            needs = SpecifierSet(self.data.get("requires-python", ""))
        except InvalidSpecifier:
            needs = SpecifierSet()
        if interpreter.version not in needs:
            raise LockError(f"the lock is for Python {needs}; {here}")
        supported = tags_for(interpreter)
        if not supported:
            return  # the tags of this interpreter are not known here; uv will check them
        for package in self.packages:
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
                    f"({names}); {here}"
                )
