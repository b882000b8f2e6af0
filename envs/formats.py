"""The lockfiles users keep: PEP 751 `pylock.toml`, `conda-lock.yml`, `pixi.lock`, hashed
requirements.

`read` turns any of them into a `Lock` (refusing one made for another
interpreter or platform); `write` renders a pip-only `Lock` as pylock,
requirements or conda-lock. Output is deterministic: the same lock gives the
same bytes (no timestamps, packages and hashes sorted). `conda-lock.yml` is
read and written with conda-lock's own models and `pixi.lock` is read with
rattler's (the `conda` extra); their conda packages make a conda lock
(`conda.py`). Writing pixi.lock is pixi's job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from envs.errors import INSTALL_CONDA
from envs.files import atomic_write_text
from envs.lockfile import Lock, LockedPackage, LockError
from envs.spec import Interpreter, digest

Format = Literal["pylock", "conda-lock", "requirements"]
FORMATS: tuple[str, ...] = get_args(Format)

_HEADER = "# sandbox-runner lock for {implementation} {version} on {platform}\n"
_HEADER_RE = re.compile(r"^# sandbox-runner lock for (\S+) (\S+) on (\S+)$", re.MULTILINE)
_CONDA_PLATFORMS = {
    ("linux", "x86_64"): "linux-64",
    ("linux", "aarch64"): "linux-aarch64",
    ("linux", "ppc64le"): "linux-ppc64le",
    ("macosx", "arm64"): "osx-arm64",
    ("macosx", "x86_64"): "osx-64",
    ("win", "amd64"): "win-64",
}


ReadFormat = Literal["pylock", "conda-lock", "pixi", "requirements"]


def format_of(path: Path) -> ReadFormat:
    """The format a name suggests: `*.toml` pylock, `*.yml` conda-lock, `pixi.lock` (or any
    `*.lock` in YAML with a `version:`) pixi, else requirements."""
    if path.name == "pixi.lock" or (path.suffix == ".lock" and _starts_with_version(path)):
        return "pixi"
    if path.suffix == ".toml":
        return "pylock"
    if path.suffix in (".yml", ".yaml"):
        return "conda-lock"
    return "requirements"


def conda_platform(interpreter: Interpreter) -> str:
    """conda's name for the interpreter's platform (`linux-x86_64` -> `linux-64`)."""
    parts = interpreter.platform.split("-")
    return _CONDA_PLATFORMS.get((parts[0], parts[-1]), interpreter.platform)


def _here(interpreter: Interpreter) -> str:
    return f"{interpreter.implementation} {interpreter.version} on {interpreter.platform}"


def _starts_with_version(path: Path) -> bool:
    try:
        with path.open() as f:
            return f.readline().startswith("version:")
    except (OSError, UnicodeDecodeError):
        return False


def read(
    path: Path, interpreter: Interpreter, environment: str | None = None, memo: Path | None = None
) -> Lock:
    """The lock in a file of any of the formats, checked against `interpreter`.

    `environment`: a pixi.lock environment (`default` when None) or a conda-lock
    category (`main`); the other formats have none and refuse one. `memo`: a folder
    where what a slow reader (rattler, conda-lock: an import and a YAML parse) made of
    a file is kept by the file's content, so that the next job from it skips both.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise LockError(f"cannot read lockfile {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LockError(f"lockfile {str(path)!r} is not a text file (not UTF-8)") from None
    kind = format_of(path)
    if environment is not None and not FILES[kind].environments:
        raise LockError(
            f"lockfile {str(path)!r} is a {kind} lock, which has no environments: "
            "--environment applies to pixi.lock and conda-lock.yml"
        )
    kept = None
    if memo is not None and FILES[kind].slow:  # the others read fast: nothing to keep
        key = {
            "text": text,
            "kind": kind,
            "environment": environment,
            "platform": conda_platform(interpreter),
            "folder": str(path.resolve().parent),  # a local file in it is named from there
        }
        kept = memo / f"{digest(key)}.json"
    lock = _recall(kept)
    if lock is None:
        lock = FILES[kind].read(path, text, interpreter, environment)
        if kept is not None:  # a cache, whole or not at all: without it, read again
            with contextlib.suppress(OSError):
                atomic_write_text(kept, json.dumps({"kind": lock.kind, "text": lock.text}))
    if not lock.packages:
        raise LockError(f"lockfile {str(path)!r} locks no packages")
    lock.check_for(interpreter)
    return lock


MEMO = "lockfiles"
"""The folder under the cache root where `read` keeps what slow readers made of lockfiles."""
MEMO_DAYS = 30
"""`envs gc` removes what a slow reader made of a lockfile no job read for this long."""


def prune_memo(memo: Path, now: float | None = None) -> None:
    """Remove what slow readers made of lockfiles no job read for MEMO_DAYS."""
    cutoff = (now or time.time()) - MEMO_DAYS * 86400
    with contextlib.suppress(FileNotFoundError):
        for kept in memo.iterdir():
            with contextlib.suppress(OSError):
                if kept.stat().st_mtime < cutoff:
                    kept.unlink()


def _recall(kept: Path | None) -> Lock | None:
    """A slow reader's result kept earlier, if it is there and whole (else: read again)."""
    if kept is None:
        return None
    try:
        data = json.loads(kept.read_text())
        lock = Lock(data["text"], data["kind"])
        if not lock.packages:
            return None
        os.utime(kept)  # read now: gc keeps it
    except (OSError, ValueError, KeyError, TypeError, LockError):
        return None
    return lock


def _from_pixi(path: Path, text: str, interpreter: Interpreter, environment: str | None) -> Lock:
    from envs.conda import read_pixi

    return Lock(read_pixi(path, conda_platform(interpreter), environment).text(), "conda")


def _from_pylock(path: Path, text: str, interpreter: Interpreter, environment: str | None) -> Lock:
    return Lock(text, "pylock", base=str(path.resolve().parent))


def _from_requirements(
    path: Path, text: str, interpreter: Interpreter, environment: str | None
) -> Lock:
    header = _HEADER_RE.search(text)
    if header and (header[1], header[3]) != (interpreter.implementation, interpreter.platform):
        raise LockError(
            f"the lock is for {header[1]} {header[2]} on {header[3]}; "
            f"this interpreter is {_here(interpreter)}"
        )
    return Lock(text, "requirements")


def _conda_lock() -> Any:
    try:
        import conda_lock.lockfile as module  # optional, and slow to import
    except ImportError:
        raise LockError(f"conda-lock.yml files need conda-lock: {INSTALL_CONDA}") from None
    return module


def _from_conda_lock(path: Path, text: str, interpreter: Interpreter, category: str | None) -> Lock:
    module = _conda_lock()
    try:
        lockfile = module.parse_conda_lock_file(path)
    except Exception as exc:  # yaml, pydantic and conda-lock errors
        raise LockError(f"invalid conda-lock file {str(path)!r}: {exc}") from None
    platform = conda_platform(interpreter)
    if platform not in lockfile.metadata.platforms:
        raise LockError(
            f"the lock is for {', '.join(lockfile.metadata.platforms)}; "
            f"this interpreter is {_here(interpreter)} ({platform})"
        )
    deps = [d for d in lockfile.package if d.platform == platform]
    if category is not None or any(d.manager == "conda" for d in deps):
        from envs.conda import from_conda_lock

        channels = [c.url for c in lockfile.metadata.channels]
        return Lock(from_conda_lock(deps, platform, category, channels).text(), "conda")
    lines = []
    for dep in deps:
        if not dep.hash.sha256:
            raise LockError(f"conda-lock package {dep.name} has no sha256 hash")
        lines.append(f"{dep.name} @ {dep.url} --hash=sha256:{dep.hash.sha256}\n")
    return Lock("".join(sorted(lines)), "requirements")


def write(lock: Lock, fmt: Format, interpreter: Interpreter) -> str:
    """The lock as the text of a `fmt` file."""
    if lock.unit.conda:
        raise LockError(
            f"this lock holds conda packages (from a {lock.conda.source}); the runner "
            "writes pip-only locks: keep the file it came from (writing pixi.lock is "
            "pixi's job)"
        )
    writer = FILES[fmt].write
    assert writer is not None  # every `Format` has one
    return writer(lock, interpreter)


def _to_pylock(lock: Lock, interpreter: Interpreter) -> str:
    if lock.kind != "pylock":
        raise LockError(
            "this lock came from a requirements or conda-lock file and has no pylock "
            "tables; export it as requirements or conda-lock"
        )
    return lock.text if lock.text.endswith("\n") else lock.text + "\n"


def _to_requirements(lock: Lock, interpreter: Interpreter) -> str:
    return _HEADER.format(**interpreter.identity()) + "".join(
        _requirement(p, by_url=p.direct or lock.kind == "requirements") for p in lock.packages
    )


def _requirement(package: LockedPackage, *, by_url: bool) -> str:
    urls = {f.uri for f in package.files if f.url}
    url = next(iter(urls)) if len(urls) == 1 else None
    head = f"{package.name} @ {url}" if by_url and url else f"{package.name}=={package.version}"
    if package.marker:
        head += f" ; {package.marker}"
    hashes = sorted({f"--hash=sha256:{f.sha256}" for f in package.files})
    return " \\\n    ".join([head, *hashes]) + "\n"


def _to_conda_lock(lock: Lock, interpreter: Interpreter) -> str:
    module = _conda_lock()
    from conda_lock.lockfile.v2prelim.models import (
        HashModel,
        LockedDependency,
        Lockfile,
        LockMeta,
    )

    platform = conda_platform(interpreter)
    package = []
    for pkg in lock.packages:
        chosen = pkg.file_for(interpreter)
        if not chosen.url:
            raise LockError(
                f"{pkg.name} is locked by hash only (no file URL), which conda-lock cannot "
                "hold; export it as requirements"
            )
        package.append(
            LockedDependency(
                name=pkg.name,
                version=pkg.version,
                manager="pip",
                platform=platform,
                dependencies={},
                url=chosen.uri,
                hash=HashModel(sha256=chosen.sha256),
                categories={"main"},
            )
        )
    content = digest([p.model_dump(mode="json") for p in package])
    lockfile = Lockfile(
        package=package,
        metadata=LockMeta(
            content_hash={platform: content}, channels=[], platforms=[platform], sources=[]
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "conda-lock.yml"
        module.write_conda_lock_file(lockfile, out, metadata_choices=None)
        return out.read_text()


@dataclass(frozen=True)
class FileFormat:
    """One kind of lockfile users keep: how it is read into a `Lock` (the file's path and
    text, the interpreter, the environment asked for), and written from one."""

    read: Callable[[Path, str, Interpreter, str | None], Lock]
    write: Callable[[Lock, Interpreter], str] | None
    """None: the runner does not write it (pixi.lock is pixi's)."""
    environments: bool = False
    """It holds several environments (pixi's, or conda-lock's categories): one is chosen."""
    slow: bool = False
    """Its reader imports and parses much (rattler, conda-lock): what it made is kept."""


FILES: dict[ReadFormat, FileFormat] = {
    "pylock": FileFormat(_from_pylock, _to_pylock),
    "requirements": FileFormat(_from_requirements, _to_requirements),
    "conda-lock": FileFormat(_from_conda_lock, _to_conda_lock, environments=True, slow=True),
    "pixi": FileFormat(_from_pixi, None, environments=True, slow=True),
}
"""Every format: a new one is an entry here and a name in `format_of`."""
