"""Requirement strings -> parsed, PEP 503-normalized requirements, and the merge rule.

Parsing happens once, here; everything downstream works on `Requirement`
objects or on the canonical strings this module produces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envs.errors import DuplicateRequirementError, InvalidRequirementError


def parse(text: str) -> Requirement:
    """Parse one PEP 508 requirement, or raise an error that quotes it."""
    stripped = text.strip() if isinstance(text, str) else text
    if not isinstance(stripped, str) or not stripped:
        raise InvalidRequirementError(
            f"invalid requirement {text!r}: expected a PEP 508 string such as 'numpy>=1.26'"
        )
    try:
        return Requirement(stripped)
    except InvalidRequirement as exc:  # its first line: the rest draws a caret under `text`
        why = str(exc).splitlines()[0]
        raise InvalidRequirementError(
            f"invalid requirement {text!r}: {why}; expected a PEP 508 string such as 'numpy>=1.26'"
        ) from None


def parse_all(texts: Iterable[str]) -> list[Requirement]:
    return [parse(text) for text in texts]


def name_of(req: Requirement) -> str:
    """The PEP 503-normalized distribution name."""
    return canonicalize_name(req.name)


def canonical(req: Requirement) -> str:
    """One spelling per meaning: normalized name, sorted extras and specifiers, marker.

    `Torch >= 2.0` and `torch>=2.0` give the same string; `torch[a,b]` and
    `TORCH[B, a]` too. The marker keeps its meaning; packaging normalizes its spacing.
    """
    out = name_of(req)
    if req.extras:
        out += "[" + ",".join(sorted(canonicalize_name(e) for e in req.extras)) + "]"
    if req.url:
        out += " @ " + req.url
    elif req.specifier:
        out += ",".join(sorted(str(s) for s in req.specifier))
    if req.marker is not None:
        out += "; " + str(req.marker)
    return out


def check_unique(reqs: Sequence[Requirement], what: str = "packages") -> None:
    """Refuse two entries for one distribution, naming both spellings."""
    seen: dict[str, Requirement] = {}
    for req in reqs:
        key = name_of(req)
        if key in seen:
            raise DuplicateRequirementError(
                f"Duplicate dependency in {what}: {str(seen[key])!r} and {str(req)!r} "
                f"(canonical: {key!r}); list each package once"
            )
        seen[key] = req


def merge(runtime: Sequence[Requirement], job: Sequence[Requirement]) -> list[Requirement]:
    """Merge a runtime's packages with a job's, by the Kubeflow local backend's rules.

    A job package replaces the runtime package of the same normalized name; the
    job's own list may not name a package twice; runtime-only packages come
    first (last occurrence wins), then the job's, in the order given.
    """
    check_unique(job, "packages_to_install")
    job_names = {name_of(r) for r in job}
    last_runtime: dict[str, int] = {name_of(r): i for i, r in enumerate(runtime)}
    kept = [
        r
        for i, r in enumerate(runtime)
        if name_of(r) not in job_names and last_runtime[name_of(r)] == i
    ]
    return [*kept, *job]


def read_file(path: str | os.PathLike[str]) -> list[Requirement]:
    """A requirements file: one requirement per line, `#` comments; pip options are refused.
    A `pyproject.toml` gives its `[project]` dependencies, as `uv pip install -r` reads it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequirementError(
            f"cannot read requirements file {str(path)!r}: {exc}"
        ) from None
    if Path(path).name == "pyproject.toml":
        return _project_dependencies(str(path), text)
    lines = text.splitlines()
    reqs: list[Requirement] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise InvalidRequirementError(
                f"{path}:{number}: pip option {line!r} is not supported in a requirements file; "
                "pass indexes with --index-url/--extra-index-url/--find-links"
            )
        reqs.append(parse(line))
    return reqs


def _project_dependencies(path: str, text: str) -> list[Requirement]:
    """`[project] dependencies` of a pyproject.toml (PEP 621); its optional ones are not."""
    import tomllib

    try:
        project = tomllib.loads(text).get("project")
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequirementError(f"{path} is not valid TOML: {exc}") from None
    if not isinstance(project, dict) or "dependencies" in project.get("dynamic", []):
        raise InvalidRequirementError(
            f"{path} has no static [project] dependencies (they are dynamic, or there is no "
            "[project] table): list them there, or give a requirements file"
        )
    return parse_declared(f"{path}: its [project] table", project.get("dependencies", []))


def parse_declared(where: str, deps: object) -> list[Requirement]:
    """A TOML list of dependency strings (a pyproject's, a script block's), parsed; each
    way it can be wrong refused in one line naming `where`."""
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise InvalidRequirementError(f"{where}: `dependencies` must be a list of strings")
    try:
        reqs = parse_all(deps)
    except InvalidRequirementError as exc:
        raise InvalidRequirementError(f"{where}: {exc}") from None
    check_unique(reqs, f"{where}'s dependencies")
    return reqs
