"""Inline script metadata (PEP 723): the `# /// script` block in which a script declares
the packages and the Python it needs, as `uv run script.py` and `pipx run` read it.

    # /// script
    # requires-python = ">=3.11"
    # dependencies = ["torch==2.13.0", "numpy"]
    # ///

Its `dependencies` join the job's package set (a package also given on the
command line is taken from there), its `requires-python` is checked against the
interpreter the env is built on, and a lockfile must hold what it declares. The
block is read with the specification's reference expression; `[tool]` tables
are other tools' and are left alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from envs.errors import EnvError
from envs.requirements import name_of, parse_declared

BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")
"""The reference expression of the inline script metadata specification."""


class ScriptMetadataError(EnvError, ValueError):
    """A `# /// script` block that is not valid metadata, or that this job cannot meet."""


@dataclass(frozen=True)
class ScriptMetadata:
    """What a script's `# /// script` block declares."""

    path: str
    dependencies: tuple[Requirement, ...] = ()
    requires_python: SpecifierSet | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ScriptMetadata | None:
        """The script's block, None where it has none (or cannot be read: running it says
        why); a block that is not valid metadata is refused in one line naming the script."""
        try:
            text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
        except OSError:
            return None
        if "# /// script" not in text:  # the common case, without the expression
            return None
        blocks = [m for m in BLOCK.finditer(text) if m.group("type") == "script"]
        if not blocks:  # an unclosed block is ignored, as the specification says
            return None
        where = f"{path}: its `# /// script` block (PEP 723)"
        if len(blocks) > 1:
            raise ScriptMetadataError(f"{where} appears {len(blocks)} times; keep one")
        content = "".join(
            line[2:] if line.startswith("# ") else line[1:]
            for line in blocks[0].group("content").splitlines(keepends=True)
        )
        import tomllib

        try:
            data = tomllib.loads(content)
        except tomllib.TOMLDecodeError as exc:
            raise ScriptMetadataError(f"{where} is not valid TOML: {exc}") from None
        dependencies, requires_python = _fields(where, data)
        return cls(str(path), dependencies, requires_python)

    def merged(self, given: Sequence[Requirement]) -> list[Requirement]:
        """The job's package set: the script's dependencies, each replaced by a package of
        the same name given on the command line, then those."""
        names = {name_of(r) for r in given}
        return [*(r for r in self.dependencies if name_of(r) not in names), *given]

    def check_python(self, version: str, interpreter: str) -> None:
        """Refuse an interpreter outside `requires-python`."""
        if self.requires_python is None or self.requires_python.contains(version, prereleases=True):
            return
        raise ScriptMetadataError(
            f"{self.path} requires Python {self.requires_python} (its `requires-python`), "
            f"and the env's interpreter {interpreter} is {version}: set RUNNER_PYTHON to a "
            f"Python it allows ({self.requires_python})"
        )

    def check_locked(self, locked: Iterable[tuple[str, str]], lockfile: str) -> None:
        """Refuse a lock that does not hold a declared dependency in a version it allows
        (`locked`: normalized name and version); one whose marker excludes this machine
        need not be there."""
        versions = dict(locked)
        for req in self.dependencies:
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            version = versions.get(name_of(req))
            if version is None:
                found = "does not lock it"
            elif _allows(req, version):
                continue
            else:
                found = f"locks {name_of(req)} {version}"
            raise ScriptMetadataError(
                f"{self.path} declares {str(req)!r} (PEP 723) and the lockfile {lockfile} "
                f"{found}: lock it again with the script's dependencies "
                f"(`runner lock --script {self.path}`)"
            )


def _fields(
    where: str, data: dict[str, object]
) -> tuple[tuple[Requirement, ...], SpecifierSet | None]:
    """The block's `dependencies` and `requires-python`, parsed."""
    reqs = tuple(parse_declared(where, data.get("dependencies", [])))
    python = data.get("requires-python")
    if python is None:
        return reqs, None
    try:
        if not isinstance(python, str):
            raise InvalidSpecifier(repr(python))
        specifier = SpecifierSet(python)
    except InvalidSpecifier:
        raise ScriptMetadataError(
            f"{where}: `requires-python` {python!r} is not a version specifier such as '>=3.11'"
        ) from None
    return reqs, specifier


def _allows(req: Requirement, version: str) -> bool:
    try:
        return req.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:  # a version that is not PEP 440 (some conda builds): by name only
        return not req.specifier
