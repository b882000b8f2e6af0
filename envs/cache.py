"""EnvCache.ensure(spec) -> Env: look up, lock, build, publish.

Layout under the cache root::

    envs/<env-key>/        ready environments (a relocatable venv + runner-env.json + its lock)
    specs/<spec-key>.json  spec key -> env key; a hit reads this and the env's metadata, no uv
    locks/                 one build lock per spec key and per env key (they outlive the env)
    leases/<env-key>       shared OS locks held by jobs; the file's mtime is "last used"
    objects/               compiled bytecode: one copy per content, hardlinked into envs
    tmp/                   resolves and builds in progress, named with their builder's pid
    uv/                    uv's cache, on the same filesystem so installs are hardlinks
    conda/                 rattler's package cache (conda locks), hardlinked the same way

An environment becomes visible under `envs/` only by one atomic rename of a
finished build whose metadata is already inside it, so nothing half built is
ever found under a ready key. A build killed at any moment leaves only a
directory under `tmp/`, which the next build of that key (or `gc`) removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from envs import builder
from envs.base import probe
from envs.errors import BuildError, CacheDirError, EnvError, EnvNotFoundError
from envs.files import atomic_write_text, dir_problem, flocked, held, remove_tree, tree_size
from envs.lockfile import FILENAMES, Lock
from envs.log import get_logger
from envs.spec import EnvSpec, Interpreter

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

_log = get_logger("envs.cache")

META = "runner-env.json"


class EnvMeta(BaseModel):
    """What an environment holds and how it came to be; written before it is published."""

    key: str
    requirements: list[str]
    index: dict[str, Any]
    interpreter: dict[str, str]
    packages: list[str]
    created: datetime
    size_bytes: int
    build_seconds: float
    base: dict[str, str] | None = None
    """A layer's base: its python and fingerprint (`PythonBase.identity`)."""
    base_env: str | None = None
    """The key of the cached env that is the layer's base, if it is one: kept while used."""
    conda: dict[str, Any] | None = None
    """A conda env's platform, environment, channels and package counts (`CondaSet.shown`)."""


@dataclass(frozen=True)
class Env:
    """A ready environment in the cache."""

    key: str
    path: Path
    meta: EnvMeta
    last_used: datetime

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    @property
    def lock(self) -> Lock:
        for kind, name in FILENAMES.items():
            if (self.path / name).exists():
                return Lock((self.path / name).read_text(), kind)
        raise EnvNotFoundError(f"environment {self.key} holds no lock")


class EnvInUseError(EnvError):
    """The environment is leased by a running job and cannot be removed now."""


class EnvDamagedError(EnvError):
    """A cached environment whose metadata cannot be read (a disk fault, a hand edit).

    Never used: the next job that needs it rebuilds it, `remove` and gc take it.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(
            f"environment {key[:12]} is damaged ({problem}); the next job that needs it "
            f"rebuilds it, or remove it with `runner envs rm {key[:12]}`"
        )
        self.key = key


class EnvCache:
    """A content-addressed cache of virtual environments under one root directory."""

    def __init__(self, root: Path, uv_binary: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.envs_dir = self.root / "envs"
        self.specs_dir = self.root / "specs"
        self.locks_dir = self.root / "locks"
        self.leases_dir = self.root / "leases"
        self.tmp_dir = self.root / "tmp"
        self.objects_dir = self.root / "objects"
        self.conda_dir = self.root / "conda"
        self._check(
            (self.envs_dir, self.specs_dir, self.locks_dir, self.leases_dir, self.tmp_dir),
            write=False,
        )
        self.uv = builder.Uv(uv_binary or builder.default_uv(), self.root / "uv")

    def check_writable(self) -> None:
        """Refuse, naming the folder, a cache that builds and leases could not write."""
        self._check((self.leases_dir, self.tmp_dir, self.locks_dir), write=True)

    @staticmethod
    def _check(folders: tuple[Path, ...], *, write: bool) -> None:
        for d in folders:
            problem = dir_problem(d, write=write)
            if problem:
                raise CacheDirError(f"cannot use the environment cache at {d}: {problem}")

    # -- lookup ---------------------------------------------------------------

    def _load(self, env_key: str) -> Env | None:
        """The ready env of that key; None if there is none; EnvDamagedError if its folder is
        there but its metadata cannot be read (published envs always hold it)."""
        path = self.envs_dir / env_key
        try:
            meta = EnvMeta.model_validate_json((path / META).read_bytes())
        except FileNotFoundError:
            if path.is_dir():
                raise EnvDamagedError(env_key, f"{META} is missing") from None
            return None
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"] if exc.errors() else "invalid"
            raise EnvDamagedError(env_key, f"{META} is unreadable: {problem}") from None
        except OSError as exc:
            raise EnvDamagedError(env_key, f"{META}: {exc.strerror or exc}") from None
        try:
            used = (self.leases_dir / env_key).stat().st_mtime
        except FileNotFoundError:
            used = meta.created.timestamp()
        return Env(env_key, path, meta, datetime.fromtimestamp(used, UTC))

    def lookup(self, spec: EnvSpec) -> Env | None:
        """The ready env for this spec, without resolving anything."""
        env_key = self._env_key_of(spec)
        return None if env_key is None else self._load(env_key)

    def _env_key_of(self, spec: EnvSpec) -> str | None:
        try:
            return (self.specs_dir / f"{spec.key}.json").read_text().strip()
        except FileNotFoundError:
            return None

    def _found(self, env_key: str | None, log: Logger) -> tuple[Env | None, Lock | None]:
        """The ready env of that key, or None. A damaged one is taken out, to be built again
        from its lock, returned where it still reads."""
        if env_key is None:
            return None, None
        try:
            return self._load(env_key), None
        except EnvDamagedError as exc:
            return None, self._heal(exc, log)

    def scan(self) -> tuple[list[Env], list[EnvDamagedError]]:
        """Every ready environment, least recently used first, and what is wrong with each
        damaged one."""
        envs, damaged = [], []
        for path in self.envs_dir.iterdir():
            try:
                env = self._load(path.name) if path.is_dir() else None
            except EnvDamagedError as exc:
                damaged.append(exc)
                continue
            if env is not None:
                envs.append(env)
        return sorted(envs, key=lambda e: e.last_used), damaged

    def ready(self) -> list[Env]:
        """Every ready environment, least recently used first (damaged ones left out)."""
        return self.scan()[0]

    def get(self, key: str) -> Env:
        """An env by its key or an unambiguous prefix of it (at least 4 characters)."""
        env = self._load(self.match(key))
        if env is None:
            raise EnvNotFoundError(f"environment {key!r} was removed")
        return env

    def match(self, key: str) -> str:
        """The full key of the env named by `key` or an unambiguous prefix of it."""
        key = key.strip().lower()
        matches = [p.name for p in self.envs_dir.iterdir() if p.name.startswith(key)]
        if len(key) < 4 or not matches:
            raise EnvNotFoundError(
                f"no cached environment with key {key!r}; `runner envs list` shows the keys"
            )
        if len(matches) > 1:
            raise EnvNotFoundError(
                f"key prefix {key!r} is ambiguous ({len(matches)} environments); give more of it"
            )
        return matches[0]

    def spec_keys(self, env_key: str) -> list[str]:
        return sorted(
            p.stem for p in self.specs_dir.glob("*.json") if p.read_text().strip() == env_key
        )

    # -- build ----------------------------------------------------------------

    def _touch(self, env_key: str) -> None:
        (self.leases_dir / env_key).touch()

    def ensure(self, spec: EnvSpec, log: Logger | None = None, lock: Lock | None = None) -> Env:
        """Return the ready env for `spec`, building it at most once across processes.

        With `lock`, the env holds exactly that lock: nothing is resolved, and the
        lock's content is the key. Events go to `log` (a job's log, say) or to
        this module's logger.
        """
        log = log or _log
        started = time.monotonic()

        def hit(env: Env, waited: bool) -> Env:
            self._touch(env.key)
            seconds = time.monotonic() - started
            log.info("env.hit", env=env.key, spec=spec.key, waited=waited, seconds=seconds)
            return env

        if lock is not None:
            return self._ensure_locked(spec, lock, log, hit)
        env, salvaged = self._found(self._env_key_of(spec), log)
        if env is not None:
            return hit(env, waited=False)
        with flocked(self.locks_dir / f"spec-{spec.key}.lock"):
            env, again = self._found(self._env_key_of(spec), log)  # built by another meanwhile?
            if env is not None:
                return hit(env, waited=True)
            lock = salvaged or again or self._resolve(spec, log)
            with self._over_cached(spec, lock, log) as built:  # a layer where a base fits
                env_key = built.env_key(lock)
                env = self._found(env_key, log)[0]
                if env is not None:
                    log.info("env.shared", env=env_key, spec=spec.key)
                else:
                    with flocked(self.locks_dir / f"env-{env_key}.lock"):
                        env = self._found(env_key, log)[0]
                        env = env or self._build(built, lock, env_key, log)
            atomic_write_text(self.specs_dir / f"{spec.key}.json", env_key + "\n")
            self._touch(env_key)
            return env

    def _ensure_locked(
        self, spec: EnvSpec, lock: Lock, log: Logger, hit: Callable[[Env, bool], Env]
    ) -> Env:
        env_key = spec.env_key(lock)
        env = self._found(env_key, log)[0]
        if env is not None:
            return hit(env, False)
        with flocked(self.locks_dir / f"env-{env_key}.lock"):
            env = self._found(env_key, log)[0]
            if env is not None:
                return hit(env, True)
            env = self._build(spec, lock, env_key, log)
            self._touch(env_key)
            return env

    @contextlib.contextmanager
    def _over_cached(self, spec: EnvSpec, lock: Lock, log: Logger) -> Iterator[EnvSpec]:
        """`spec` as a layer over the largest cached env whose packages `lock` holds too.

        `lock` is the full resolution of `spec`, so the result is the same packages
        either way: the layer installs what `lock` holds beyond the base's, and sees
        the base's own (the very same files: name, version and hashes, whatever
        index they came from) through its `.pth`. `spec` itself when no plain env
        of the same interpreter fits. The base is leased until the caller is done
        (the layer is published).
        """
        pins, wanted = set(lock.pins()), set(lock.packages)
        fits = [
            env
            for env in self.ready()
            if spec.base is None
            and env.meta.base is None
            and env.meta.conda is None  # its packages need their prefix: see `conda.py`
            and env.meta.interpreter == spec.interpreter.identity()
            and env.meta.packages  # an empty env holds nothing to share: never a base
            and set(env.meta.packages) < pins  # cheap first: from its metadata
        ]
        for env in sorted(fits, key=lambda e: len(e.meta.packages), reverse=True):
            if not set(env.lock.packages) <= wanted:
                continue
            fd = os.open(self.leases_dir / env.key, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                if (env.path / META).exists():  # not removed meanwhile
                    log.info("env.layer", spec=spec.key, base_env=env.key)
                    python = str(env.python)
                    yield replace(spec, interpreter=Interpreter.at(python), base=probe(python))
                    return
            finally:
                os.close(fd)
        yield spec

    def resolve(self, spec: EnvSpec, log: Logger | None = None) -> Lock:
        """The lock for `spec`: the cached env's where there is one, else a fresh resolution."""
        env, salvaged = self._found(self._env_key_of(spec), log or _log)
        if env is not None:
            return env.lock
        if salvaged is not None:
            return salvaged
        with flocked(self.locks_dir / f"spec-{spec.key}.lock"):
            return self._resolve(spec, log or _log)

    def _workdir(self, kind: str, key: str) -> Path:
        return self.tmp_dir / f"{kind}-{key}-{os.getpid()}-{secrets.token_hex(4)}"

    @contextlib.contextmanager
    def _claimed(self, kind: str, key: str) -> Iterator[Path]:
        """A fresh folder under tmp/ that is ours while we hold it, and gone after.

        Its builder holds an OS lock on it for its whole life (made under a
        hidden name, locked, then renamed), so `gc` tells a live build from a
        dead one by the lock, not by a pid that means nothing in another pid
        namespace. A folder still there when we are done is cleared out of
        the way (see `discard`).
        """
        hidden = self.tmp_dir / f".new-{secrets.token_hex(8)}"
        hidden.mkdir()
        fd = os.open(hidden, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = self._workdir(kind, key)
            hidden.rename(path)
            try:
                yield path
            finally:
                self.discard(path)
        finally:
            os.close(fd)

    def discard(self, path: Path) -> None:
        """Remove a folder: first out of the way by one rename, then as far as it goes.

        A process may still write into it (the child of a killed build): rmtree
        then fails with "Directory not empty". Renamed first, the name is free
        for the next build at once, and what cannot be removed now is left as
        `trash-*` for gc.
        """
        trash = self._workdir("trash", path.name[:16])
        try:
            path.rename(trash)
        except FileNotFoundError:
            return
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)

    def _resolve(self, spec: EnvSpec, log: Logger) -> Lock:
        started = time.monotonic()
        log.info("env.resolve", spec=spec.key, requirements=[str(r) for r in spec.requirements])
        for option, origin in spec.index.unused:
            log.warning("pip.option_not_used", option=option, origin=origin, cause="uv is not told")
        for stale in self.tmp_dir.glob(f"resolve-{spec.key}-*"):
            self._discard_if_dead(stale)  # left by a resolver that died
        with self._claimed("resolve", spec.key) as workdir:
            lock = builder.resolve(self.uv, spec, workdir, log)
        log.info(
            "env.resolved",
            spec=spec.key,
            packages=len(lock.packages),
            seconds=time.monotonic() - started,
        )
        return lock

    def _build(self, spec: EnvSpec, lock: Lock, env_key: str, log: Logger) -> Env:
        """Materialize in tmp/, then publish with one rename. Caller holds the env lock."""
        for stale in self.tmp_dir.glob(f"build-{env_key}-*"):
            self._discard_if_dead(stale)  # left by a builder that died
        started = time.monotonic()
        log.info("env.build.start", env=env_key, spec=spec.key, packages=len(lock.packages))
        with self._claimed("build", env_key) as workdir:
            return self._publish(spec, lock, env_key, workdir, started, log)

    def _discard_if_dead(self, path: Path) -> None:
        if not held(path):
            self.discard(path)

    def _publish(
        self, spec: EnvSpec, lock: Lock, env_key: str, workdir: Path, started: float, log: Logger
    ) -> Env:
        try:
            final = self.envs_dir / env_key
            builder.materialize(
                self.uv,
                lock,
                spec,
                workdir,
                self.objects_dir,
                log,
                final=final,
                conda_cache=self.conda_dir,
            )
            conda = lock.conda if lock.unit.conda else None
            interpreter = Interpreter.at(workdir / "bin" / "python") if conda else spec.interpreter
            meta = EnvMeta(
                key=env_key,
                requirements=spec.canonical_requirements,
                index=spec.index.shown(),
                interpreter=interpreter.identity(),
                packages=lock.pins(),
                created=datetime.now(UTC),
                size_bytes=tree_size(workdir),
                build_seconds=round(time.monotonic() - started, 3),
                base=spec.base.identity() if spec.base else None,
                base_env=self.env_of(spec.base.executable) if spec.base else None,
                conda=conda.shown() if conda else None,
            )
            (workdir / META).write_text(meta.model_dump_json(indent=2))
            workdir.chmod(0o755)  # whatever the umask: root's jobs run as another user
            workdir.rename(final)
        except BaseException as exc:
            if isinstance(exc, BuildError):
                log.error("env.build.failed", env=env_key, spec=spec.key, error=str(exc))
            raise
        log.info(
            "env.build",
            env=env_key,
            spec=spec.key,
            packages=len(lock.packages),
            seconds=meta.build_seconds,
            size_bytes=meta.size_bytes,
        )
        env = self._load(env_key)
        assert env is not None
        return env

    # -- leases and removal -----------------------------------------------------

    @contextlib.contextmanager
    def lease(
        self, spec: EnvSpec, log: Logger | None = None, lock: Lock | None = None
    ) -> Iterator[Env]:
        """Ensure the env and hold a shared lock on it: no eviction while it is held.

        The lock is an OS lock, so a process that dies releases it by dying.
        """
        for _attempt in range(3):
            env = self.ensure(spec, log, lock)
            held = [env.key, *([env.meta.base_env] if env.meta.base_env else [])]
            fds = [os.open(self.leases_dir / k, os.O_RDWR | os.O_CREAT, 0o644) for k in held]
            try:
                for fd in fds:  # a layer's lease holds its base too
                    fcntl.flock(fd, fcntl.LOCK_SH)
                if all((self.envs_dir / k / META).exists() for k in held):  # none evicted
                    yield env
                    return
            finally:
                for fd in fds:
                    os.close(fd)
        raise EnvError(f"environment {spec.key} kept disappearing while being leased")

    def env_of(self, python: str) -> str | None:
        """The key of the cached env whose interpreter `python` is (None: not one of ours)."""
        path = Path(python).absolute()
        if self.envs_dir.absolute() in path.parents:
            return path.relative_to(self.envs_dir.absolute()).parts[0]
        return None

    def layers_of(self, env_key: str) -> list[str]:
        """The ready envs that are layers over `env_key`."""
        return [e.key for e in self.ready() if e.meta.base_env == env_key]

    def remove(self, env_key: str) -> int:
        """Remove an env (a damaged one too) unless a job holds it or a layer stands on it;
        returns its own size (the disk gets back less where uv's cache links its files)."""
        try:
            env = self._load(env_key)
        except EnvDamagedError:
            env, size = None, tree_size(self.envs_dir / env_key)
        else:
            if env is None:
                raise EnvNotFoundError(f"no cached environment with key {env_key!r}")
            size = env.meta.size_bytes
        fd = os.open(self.leases_dir / env_key, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EnvInUseError(
                    f"environment {env_key[:12]} is in use by a running job; "
                    "cancel the job or try again when it ends"
                ) from None
            layers = self.layers_of(env_key)  # under the lock: a layer being built holds it
            if layers:
                raise EnvInUseError(
                    f"environment {env_key[:12]} is the base of {len(layers)} layered "
                    f"environment(s) ({', '.join(k[:12] for k in layers)}); remove those first"
                )
            trash = self._workdir("trash", env_key)
            (self.envs_dir / env_key).rename(trash)  # gone from the ready view in one step
            for spec_key in self.spec_keys(env_key):
                (self.specs_dir / f"{spec_key}.json").unlink(missing_ok=True)
            remove_tree(trash)
        finally:
            os.close(fd)
        _log.info("env.remove", env=env_key, size_bytes=size, damaged=env is None)
        return size

    def _heal(self, damaged: EnvDamagedError, log: Logger) -> Lock | None:
        """Take a damaged env out of the cache, so that the job that needs it builds it again;
        its lock, where that still reads, to build it from."""
        lock = self._salvage(damaged.key)
        try:
            self.remove(damaged.key)
        except EnvNotFoundError:  # taken out by another process meanwhile
            pass
        except EnvInUseError:
            raise EnvError(f"{damaged}; a running job uses it now") from None
        action = "rebuild from its lock" if lock else "resolve and rebuild"
        log.warning("env.damaged", env=damaged.key, error=str(damaged), action=action)
        return lock

    def _salvage(self, env_key: str) -> Lock | None:
        """The lock a damaged env holds, if it still reads whole."""
        for kind, name in FILENAMES.items():
            try:
                lock = Lock((self.envs_dir / env_key / name).read_text(), kind)
                if lock.packages:
                    return lock
            except (OSError, UnicodeDecodeError, EnvError):
                continue
        return None
