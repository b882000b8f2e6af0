"""The `requirements` kind of lock: a hashed requirements file (`name==version --hash=...`,
or `name @ URL --hash=...`), as pip and uv read it; also how a `conda-lock.yml`'s pip
packages are installed. uv installs it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from envs.locked import LockedFile, LockedPackage, LockError, check_wheels, hashed_line
from envs.spec import Interpreter, digest


def _entries(text: str) -> list[tuple[int, str, list[str]]]:
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


class Hashed:
    name = "requirements"
    filename = "requirements.txt"
    conda = False

    def packages(self, text: str, base: str | None) -> list[LockedPackage]:
        packages = []
        for number, line, hashes in _entries(text):
            try:
                req = Requirement(line)
            except InvalidRequirement as exc:
                raise LockError(f"line {number}: {line!r} is not a requirement: {exc}") from None
            pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
            if not hashes or not (req.url or pins):
                raise LockError(
                    f"line {number}: {line!r} is not locked: a lock pins every package "
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

    def key(self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter) -> str:
        listed = [asdict(p) for p in packages]
        return digest({"requirements": listed, "interpreter": interpreter.identity()})

    def check_for(
        self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter
    ) -> None:
        check_wheels(packages, interpreter)

    def install_line(self, package: LockedPackage, interpreter: Interpreter) -> str:
        return hashed_line(package)


HASHED = Hashed()
