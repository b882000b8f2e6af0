"""Conda environments: the packages of a `pixi.lock` or a `conda-lock.yml`, installed by rattler.

Either file becomes one `CondaSet`: the platform and environment it was read
for, the channels, every conda package (its URL, sha256 and the record fields
rattler's installer needs) and every PyPI package (its URL and sha256). Its
canonical JSON is the text of a `Lock` of kind `conda`, kept in the env and in
the job's record, so nothing re-reads the user's file later. The key is that
content: the same lock is one env, any changed pin is another.

`install` puts the conda packages into a prefix with rattler (`py-rattler`,
the conda ecosystem's own Rust library): archives come from rattler's package
cache, under the runner's cache root, as hardlinks. rattler checks the sha256
of what it downloads; a local archive (`file://`, which rattler reads in place
without checking) is hashed here first. The lock's PyPI packages go into the
same prefix with uv (see `builder`), and the job runs the prefix's own python.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name
from pydantic import BaseModel, ValidationError

from envs import condacache
from envs.errors import INSTALL_CONDA, BuildError
from envs.locked import LockedFile, LockedPackage, LockError, hashed_line
from envs.spec import Interpreter, digest

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger


class CondaPackage(BaseModel):
    """One conda package as locked: its archive and what rattler's installer reads of it."""

    name: str
    version: str
    build: str
    build_number: int = 0
    subdir: str
    noarch: str | None = None
    depends: list[str] = []
    url: str
    sha256: str
    md5: str | None = None
    size: int | None = None
    channel: str | None = None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


class PypiPackage(BaseModel):
    """One PyPI package of a conda lock: installed by uv into the same prefix."""

    name: str
    version: str
    url: str
    sha256: str


class CondaSet(BaseModel):
    """What a conda lock holds for one platform and environment."""

    source: str
    """The format it was read from: `pixi.lock` or `conda-lock.yml`."""
    platform: str
    environment: str
    channels: list[str] = []
    conda: list[CondaPackage]
    pypi: list[PypiPackage] = []

    @classmethod
    def parse(cls, text: str) -> CondaSet:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise LockError(f"invalid conda lock record: {exc.errors()[0]['msg']}") from None

    def text(self) -> str:
        return self.model_dump_json(indent=1) + "\n"

    def key(self) -> str:
        """The env's identity: platform, environment, and each package's file and hash."""
        return digest(
            {
                "conda": {
                    "platform": self.platform,
                    "environment": self.environment,
                    "packages": sorted((p.url, p.sha256) for p in self.conda),
                    "pypi": sorted((p.name, p.version, p.url, p.sha256) for p in self.pypi),
                }
            }
        )

    def packages(self) -> list[LockedPackage]:
        conda = [
            LockedPackage(p.name, p.version, (LockedFile(p.url, p.sha256),), manager="conda")
            for p in self.conda
        ]
        pypi = [
            LockedPackage(
                canonicalize_name(p.name), p.version, (LockedFile(p.url, p.sha256),), direct=True
            )
            for p in self.pypi
        ]
        return conda + pypi

    def counts(self) -> dict[str, int]:
        return {"conda": len(self.conda), "pypi": len(self.pypi)}

    def shown(self) -> dict[str, Any]:
        """What `runner envs show` and the env's metadata say of it."""
        return {
            "source": self.source,
            "platform": self.platform,
            "environment": self.environment,
            "channels": self.channels,
            "packages": self.counts(),
        }


class Conda:
    """The `conda` kind of lock: a `CondaSet`'s JSON (from a pixi.lock or a conda-lock.yml).
    rattler installs its conda packages into a prefix, and uv its PyPI packages into the
    prefix's own python; the platform was checked as the user's file was read."""

    name = "conda"
    filename = "conda-lock.json"
    conda = True

    def packages(self, text: str, base: str | None) -> list[LockedPackage]:
        return CondaSet.parse(text).packages()

    def key(self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter) -> str:
        return CondaSet.parse(text).key()  # it holds its own interpreter

    def check_for(
        self, text: str, packages: Sequence[LockedPackage], interpreter: Interpreter
    ) -> None:
        return None  # its platform was checked when it was read; it holds its own Python

    def install_line(self, package: LockedPackage, interpreter: Interpreter) -> str:
        return hashed_line(package)


CONDA = Conda()


def _rattler() -> Any:
    try:
        import rattler  # optional: a 25 MB wheel, imported only for conda locks
    except ImportError:
        raise LockError(f"conda packages need py-rattler: {INSTALL_CONDA}") from None
    return rattler


def _url(location: str, folder: Path) -> str:
    """A lock's location as a URL: a path (relative to the lock's folder) becomes file://."""
    if "://" in location:
        return location
    return (folder / location).resolve().as_uri()


def read_pixi(path: Path, platform: str, environment: str | None) -> CondaSet:
    """The named environment (`default` when None) of a pixi.lock, for `platform`."""
    rattler = _rattler()
    try:
        lock = rattler.LockFile.from_path(path)
    except Exception as exc:  # rattler's parse errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LockError(f"invalid pixi.lock {str(path)!r}: {first}") from None
    name = environment or "default"
    env = lock.environment(name)
    if env is None:
        names = ", ".join(sorted(n for n, _ in lock.environments())) or "none"
        raise LockError(
            f"pixi.lock {str(path)!r} has no environment {name!r} (it has: {names}); "
            "choose one with --environment"
        )
    platforms = {p.name: p for p in env.platforms()}
    if platform not in platforms:
        raise LockError(
            f"pixi.lock environment {name!r} is locked for {', '.join(sorted(platforms)) or 'no'}"
            f" platform(s); this machine is {platform}"
        )
    chosen = platforms[platform]
    folder = path.resolve().parent
    conda: list[CondaPackage] = []
    pypi: list[PypiPackage] = []
    for package in env.packages(chosen) or []:
        kind = type(package).__name__
        if kind == "PypiLockedPackage":
            sha = _sha256(package)
            if sha is None:
                raise LockError(
                    f"pixi.lock: the PyPI package {package.name} ({package.location}) has no "
                    "sha256 hash (a local or editable source?); the runner installs only "
                    "hashed files"
                )
            pypi.append(
                PypiPackage(
                    name=package.name,
                    version=str(package.version),
                    url=_url(str(package.location), folder),
                    sha256=sha.hex(),
                )
            )
        elif kind == "CondaLockedBinaryPackage":
            conda.append(_from_record(package.repo_data_record(), folder))
        else:
            raise LockError(
                f"pixi.lock: {package.name} is built from source by pixi ({package.location}); "
                "the runner installs built packages only: run `pixi install` and lock again, "
                "or publish it to a channel"
            )
    channels = [str(c) for c in env.channels()]
    return _checked(
        CondaSet(
            source="pixi.lock",
            platform=platform,
            environment=name,
            channels=channels,
            conda=conda,
            pypi=pypi,
        )
    )


def _sha256(package: Any) -> bytes | None:
    """A PyPI package's sha256, or None (rattler's hashes object raises for an entry that
    has none, an editable source say)."""
    try:
        return package.hashes.sha256  # type: ignore[no-any-return]
    except AttributeError:
        return None


def _from_record(record: Any, folder: Path) -> CondaPackage:
    if record.sha256 is None:
        raise LockError(f"the conda package {record.file_name} has no sha256 hash in the lock")
    noarch = record.noarch
    return CondaPackage(
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        build_number=int(record.build_number),
        subdir=str(record.subdir),
        noarch="python" if noarch.python else "generic" if noarch.generic else None,
        depends=list(record.depends),
        url=_url(str(record.url), folder),
        sha256=record.sha256.hex(),
        md5=record.md5.hex() if record.md5 else None,
        size=record.size,
        channel=str(record.channel) if record.channel else None,
    )


def from_conda_lock(
    dependencies: list[Any], platform: str, category: str | None, channels: list[str]
) -> CondaSet:
    """conda-lock's own models (`LockedDependency`) of one platform: the packages of `category`
    (`main` when None), conda and pip."""
    wanted = category or "main"
    chosen = [d for d in dependencies if wanted in (getattr(d, "categories", None) or {"main"})]
    if not chosen:
        raise LockError(f"the conda-lock file has no packages in category {wanted!r}")
    conda: list[CondaPackage] = []
    pypi: list[PypiPackage] = []
    for dep in chosen:
        if not dep.hash.sha256:
            raise LockError(f"conda-lock package {dep.name} has no sha256 hash")
        if dep.manager != "conda":
            pypi.append(
                PypiPackage(name=dep.name, version=dep.version, url=dep.url, sha256=dep.hash.sha256)
            )
            continue
        file_name = dep.url.rsplit("/", 1)[-1]
        stem = file_name.removesuffix(".conda").removesuffix(".tar.bz2")
        build = stem.rsplit("-", 1)[-1]
        subdir = dep.url.rsplit("/", 2)[-2] if dep.url.count("/") >= 2 else platform
        conda.append(
            CondaPackage(
                name=dep.name,
                version=dep.version,
                build=build,
                subdir=subdir,
                depends=[f"{name} {spec}".strip() for name, spec in dep.dependencies.items()],
                url=dep.url,
                sha256=dep.hash.sha256,
                md5=dep.hash.md5,
            )
        )
    return _checked(
        CondaSet(
            source="conda-lock.yml",
            platform=platform,
            environment=wanted,
            channels=channels,
            conda=conda,
            pypi=pypi,
        )
    )


def _checked(found: CondaSet) -> CondaSet:
    """A conda env runs the lock's own python: one without it is refused, saying why."""
    if not any(p.name == "python" for p in found.conda):
        raise LockError(
            f"the {found.source} environment {found.environment!r} holds conda packages but no "
            "conda `python`: the job's interpreter comes from the lock (add python to the "
            "workspace, e.g. `pixi add python`, and lock again)"
        )
    found.conda.sort(key=lambda p: (p.name, p.url))
    found.pypi.sort(key=lambda p: canonicalize_name(p.name))
    return found


def mirrored(url: str, mirrors: Mapping[str, str]) -> str:
    """`url` from a mirror where one is set for its channel (the longest prefix wins)."""
    for prefix in sorted(mirrors, key=len, reverse=True):
        head = prefix.rstrip("/") + "/"
        if url.startswith(head):
            return mirrors[prefix].rstrip("/") + "/" + url[len(head) :]
    return url


def local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def _verify(package: CondaPackage, url: str) -> None:
    """rattler reads a local archive in place without checking it: check it here."""
    path = local_path(url)
    if path is None:
        return  # downloaded: rattler checks the sha256 itself
    digest_ = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest_.update(chunk)
    except OSError as exc:
        raise BuildError(
            f"cannot read the conda package {package.file_name} at {url}: {exc.strerror or exc}"
        ) from None
    if digest_.hexdigest() != package.sha256:
        raise BuildError(
            f"hash mismatch for the conda package {package.name} {package.version} ({url}): "
            f"the lock says sha256 {package.sha256}, the file is {digest_.hexdigest()}; "
            "the file changed after it was locked"
        )


def _record(rattler: Any, package: CondaPackage, url: str) -> Any:
    record = rattler.PackageRecord(
        name=package.name,
        version=package.version,
        build=rattler.BuildString(package.build),
        build_number=package.build_number,
        subdir=package.subdir,
        noarch=rattler.NoArchType(package.noarch),
        depends=package.depends,
        sha256=bytes.fromhex(package.sha256),
        md5=bytes.fromhex(package.md5) if package.md5 else None,
        size=package.size,
    )
    channel = package.channel or url.rsplit("/", 2)[0]
    return rattler.RepoDataRecord(record, package.file_name, url, channel)


def _run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to its end, also from a thread whose event loop runs (a notebook)."""
    import asyncio  # here: a job whose conda env is cached never needs it
    import threading

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


PROGRESS_SECONDS = 2.0
"""At most one `env.conda.progress` event this often (hundreds of packages, each its own
callbacks, would otherwise flood the job's log)."""


class Progress:
    """rattler's installer callbacks as `env.conda.progress` events: packages done of all,
    and bytes downloaded, so a long download is seen moving (in the job's log, and on the
    terminal of a foreground job)."""

    def __init__(self, log: Logger, packages: int) -> None:
        self.log = log
        self.packages = packages
        self.done = 0
        self.downloaded: dict[int, int] = {}
        self.last = time.monotonic()

    def begin(self) -> None:
        """Said once as the install starts: none done of all, before a byte arrives."""
        self._tell(last=True)

    def on_download_start(self, cache_entry: int) -> int:
        """A token of our own for each download (the bytes of each are kept apart)."""
        self.downloaded[len(self.downloaded)] = 0
        return len(self.downloaded) - 1

    def on_download_progress(self, download_idx: int, progress: int, total: int | None) -> None:
        self.downloaded[download_idx] = progress
        self._tell()

    def on_transaction_operation_complete(self, operation: int) -> None:
        self.done += 1
        self._tell(last=self.done == self.packages)

    def _tell(self, *, last: bool = False) -> None:
        now = time.monotonic()
        if last or now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.log.info(
                "env.conda.progress",
                done=self.done,
                packages=self.packages,
                downloaded_bytes=sum(self.downloaded.values()),
            )


NETWORK_SIGNS = ("dns error", "error sending request", "connection refused", "timed out")
"""Words of rattler's error chain when a channel could not be reached."""


def _hint(cause: str, mirrors: Mapping[str, str]) -> str:
    """What to do when the channel could not be reached: a mirror of it (the lock's hashes
    still hold), named by the setting that gives one."""
    if not any(sign in cause.lower() for sign in NETWORK_SIGNS):
        return ""
    have = f" (mirrors now: {', '.join(f'{k}={v}' for k, v in mirrors.items())})" if mirrors else ""
    return (
        "; the channel could not be reached from here: point RUNNER_CONDA_MIRRORS at a mirror "
        f"of it, CHANNEL=MIRROR (a folder or URL){have}"
    )


def install(
    found: CondaSet,
    target: Path,
    final: Path,
    package_cache: Path,
    mirrors: Mapping[str, str],
    log: Logger,
) -> None:
    """The conda packages into `target`, patched for the prefix they will have at `final`.

    Link scripts of packages are not run (they are arbitrary code outside the sandbox).
    """
    rattler = _rattler()
    records = []
    for package in found.conda:
        url = mirrored(package.url, mirrors)
        _verify(package, url)
        records.append(_record(rattler, package, url))
    progress = Progress(log, len(records))
    progress.begin()
    try:
        with condacache.installing(package_cache):  # gc prunes none of it meanwhile
            _run(
                rattler.install(
                    records,
                    target,
                    cache_dir=package_cache,
                    reporter=progress,
                    alternative_target_prefix=final,
                    execute_link_scripts=False,
                )
            )
    except Exception as exc:  # rattler's InstallerError and friends
        lines = [ln.removeprefix("Caused by: ").strip().rstrip(".") for ln in str(exc).splitlines()]
        parts = [p for ln in lines for p in ln.split(": ") if p]
        cause = ": ".join(dict.fromkeys(parts)) or type(exc).__name__  # each cause once
        raise BuildError(
            f"installing the conda packages failed: {cause}{_hint(cause, mirrors)}"
        ) from None
