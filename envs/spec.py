"""EnvSpec: what an environment must contain, and its content address.

The key is a sha256 over a canonical JSON of three things: the normalized
requirement set, the interpreter, and the index configuration. Spelling,
spacing and order of requirements never change it; a different pin, extra,
marker, interpreter or index does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement

from envs import pipconfig
from envs.errors import EnvError, InvalidIndexError
from envs.pipconfig import mask

if TYPE_CHECKING:
    from envs.base import PythonBase
    from envs.lockfile import Lock
from envs.requirements import canonical, check_unique

KEY_VERSION = 1
"""Bumped whenever the canonical form changes, so old keys can never alias new ones."""

_TRUE = {"1", "true", "yes", "on"}
PYPI = {"https://pypi.org/simple", "https://pypi.python.org/simple"}


_INDEX_URL = re.compile(r"^(https?|file)://\S+$", re.IGNORECASE)


def _is_url(text: str) -> bool:
    return "://" in text


def _absolute(location: str) -> str:
    """Local find-links paths become absolute: a relative path means another folder elsewhere."""
    return location if _is_url(location) else str(Path(location).expanduser().resolve())


@dataclass(frozen=True)
class Connection:
    """How uv reaches the package sources: not part of any key (the same files arrive)."""

    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    client_cert: str | None = None
    proxy: str | None = None
    timeout: str | None = None
    retries: str | None = None
    conda_mirrors: tuple[tuple[str, str], ...] = ()
    """(channel URL, mirror URL): conda packages of that channel are fetched from the mirror."""


@dataclass(frozen=True)
class IndexConfig:
    """Where packages come from. `index_url=None` means uv's default (PyPI).

    `origins` says where each option came from (`--index-url`, `RUNNER_FIND_LINKS`,
    `PIP_INDEX_URL`, `/etc/pip.conf [global]`); it is not part of the key.
    """

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    constraints: tuple[str, ...] = ()
    """Constraint files (pip's `constraint`): their content is part of the key."""
    index_strategy: str | None = None
    """uv's `--index-strategy` as asked; None: as pip resolves (see `strategy`)."""
    connection: Connection = Connection()
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    unused: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """(option, origin) of each pip option that would change what `pip install` gets but
    that uv is not told: named in a warning when a set is resolved, never dropped silently."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "find_links", tuple(_absolute(f) for f in self.find_links))
        object.__setattr__(self, "constraints", tuple(_absolute(f) for f in self.constraints))
        for url in (self.index_url, *self.extra_index_urls):
            if url is not None and not _INDEX_URL.match(url):
                raise InvalidIndexError(
                    f"index URL {mask(url)!r} is not a URL: give http(s)://HOST/PATH or "
                    "file:///PATH (a folder of wheels goes to find-links)"
                )

    @property
    def strategy(self) -> str | None:
        """How a package found on several indexes is chosen, where there are several: as
        asked, else as pip does, the best match across all of them (uv's
        `unsafe-best-match`); uv's own default takes each package from the first index
        that has it (`first-index`), which keeps a package on a private index from being
        shadowed by a public one of the same name (dependency confusion)."""
        if self.no_index or not self.extra_index_urls:
            return None  # one index (and find-links): nothing to choose between
        return self.index_strategy or "unsafe-best-match"

    def identity(self) -> dict[str, Any]:
        """What the key holds: the sources (credentials left out, so a new token is the same
        index) and what the constraint files say. Naming PyPI, the default, is naming none."""
        data: dict[str, Any] = {
            "index_url": mask(self.index_url) if self.index_url else None,
            "extra_index_urls": [mask(u) for u in self.extra_index_urls],
            "find_links": [mask(f) for f in self.find_links],
            "no_index": self.no_index,
        }
        if self.index_url is not None and self.index_url.rstrip("/") in PYPI:
            data["index_url"] = None
        if self.constraints:  # absent otherwise: keys without constraints stay as they were
            data["constraints"] = [self._constraint_text(f) for f in self.constraints]
        if self.strategy:  # only where there is a choice: one index's keys stay as they were
            data["index_strategy"] = self.strategy
        return data

    def _constraint_text(self, path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise InvalidIndexError(
                f"constraint file {path!r} (from {self.origin('constraints')}) cannot be "
                f"read: {exc.strerror or exc}"
            ) from None

    def origin(self, name: str) -> str:
        return dict(self.origins).get(name, "default")

    def labelled(self, label: str | Mapping[str, str]) -> IndexConfig:
        """This layer with `label` as the origin of each option it sets (`label[name]`)."""
        names = [f for f in _SET_BY if _SET_BY[f](self)]
        origins = dict(self.origins)
        for name in names:
            origins.setdefault(name, label if isinstance(label, str) else label[name])
        return replace(self, origins=tuple(sorted(origins.items())))

    def shown(self) -> dict[str, Any]:
        """The configuration as records and people see it: credentials masked, origins."""
        data = asdict(self)
        data["index_url"] = mask(self.index_url) if self.index_url else None
        data["extra_index_urls"] = [mask(u) for u in self.extra_index_urls]
        data["find_links"] = [mask(f) for f in self.find_links]
        data["connection"]["proxy"] = mask(self.connection.proxy) if self.connection.proxy else None
        data["connection"]["conda_mirrors"] = {
            mask(c): mask(m) for c, m in self.connection.conda_mirrors
        }
        data["origins"] = dict(self.origins)
        data["unused"] = [{"option": o, "origin": w} for o, w in self.unused]
        return data

    @classmethod
    def from_urls(cls, urls: Sequence[str]) -> IndexConfig:
        """Kubeflow's `pip_index_urls`: the first is the index, the rest are extra indexes."""
        return cls(index_url=urls[0], extra_index_urls=tuple(urls[1:])) if urls else cls()

    @classmethod
    def from_pip(cls, environ: Mapping[str, str], prefix: str = sys.prefix) -> IndexConfig:
        """What `pip install` would use: pip's files and `PIP_*` variables (`envs.pipconfig`),
        which uv never reads. Options uv has no equivalent for: see `pip_ignored`."""
        found = pipconfig.read(environ, prefix)

        def value(name: str) -> str | None:
            return found[name].value.strip() if name in found else None

        def values(name: str) -> tuple[str, ...]:
            return tuple((value(name) or "").split())

        config = cls(
            index_url=value("index-url"),
            extra_index_urls=values("extra-index-url"),
            find_links=values("find-links"),
            no_index=pipconfig.is_true(value("no-index") or ""),
            constraints=values("constraint"),
            connection=Connection(
                trusted_hosts=values("trusted-host"),
                cert=value("cert"),
                client_cert=value("client-cert"),
                proxy=value("proxy"),
                timeout=value("timeout"),
                retries=value("retries"),
            ),
        )
        used = set(_PIP_NAMES.values()) | pipconfig.INERT
        unused = tuple(sorted((n, s.origin) for n, s in found.items() if n not in used))
        return replace(config, unused=unused).labelled(
            {name: found[option].origin for name, option in _PIP_NAMES.items() if option in found}
        )

    @classmethod
    def layered(cls, *layers: IndexConfig) -> IndexConfig:
        """Each field from the first layer that sets it (job, then settings, then pip env).

        The main index (`index_url`, or `no_index`) is one choice: the first layer
        that makes it wins whole, so a job's explicit index undoes PIP_NO_INDEX.
        """
        main = next((la for la in layers if la.index_url or la.no_index), cls())
        chosen: dict[str, IndexConfig] = {"index_url": main, "no_index": main}
        for name, is_set in _SET_BY.items():
            chosen.setdefault(name, next((la for la in layers if is_set(la)), cls()))
        connection = {
            f.name: getattr(chosen[f.name].connection, f.name) for f in fields(Connection)
        }
        return cls(
            index_url=main.index_url,
            extra_index_urls=chosen["extra_index_urls"].extra_index_urls,
            find_links=chosen["find_links"].find_links,
            no_index=main.no_index,
            constraints=chosen["constraints"].constraints,
            index_strategy=chosen["index_strategy"].index_strategy,
            connection=Connection(**connection),
            unused=tuple(sorted({u for layer in layers for u in layer.unused})),
            origins=tuple(
                sorted(
                    (name, layer.origin(name))
                    for name, layer in chosen.items()
                    if _SET_BY[name](layer)
                )
            ),
        )


_SET_BY: dict[str, Callable[[IndexConfig], object]] = {
    "index_url": lambda c: c.index_url,
    "no_index": lambda c: c.no_index,
    "extra_index_urls": lambda c: c.extra_index_urls,
    "find_links": lambda c: c.find_links,
    "constraints": lambda c: c.constraints,
    "index_strategy": lambda c: c.index_strategy,
    **{f.name: attrgetter(f"connection.{f.name}") for f in fields(Connection)},
}
"""Each option of an IndexConfig, and whether a layer sets it."""

_PIP_NAMES = {
    "index_url": "index-url",
    "no_index": "no-index",
    "extra_index_urls": "extra-index-url",
    "find_links": "find-links",
    "constraints": "constraint",
    "trusted_hosts": "trusted-host",
    "cert": "cert",
    "client_cert": "client-cert",
    "proxy": "proxy",
    "timeout": "timeout",
    "retries": "retries",
}
"""pip's name for each option (`envs.pipconfig`)."""


_PROBE = (
    "import json, platform, sys, sysconfig;"
    "print(json.dumps({'implementation': sys.implementation.name,"
    " 'version': platform.python_version(),"
    " 'abi': sysconfig.get_config_var('SOABI') or '',"
    " 'platform': sysconfig.get_platform()}))"
)


@dataclass(frozen=True)
class Interpreter:
    """The Python an environment is built on. `executable` is not part of the identity."""

    implementation: str
    version: str
    abi: str
    platform: str
    executable: str = field(compare=False)

    @classmethod
    def current(cls) -> Interpreter:
        return cls(
            implementation=sys.implementation.name,
            version=platform.python_version(),
            abi=sysconfig.get_config_var("SOABI") or "",
            platform=sysconfig.get_platform(),
            executable=sys.executable,
        )

    @classmethod
    def at(cls, executable: str | os.PathLike[str] | None) -> Interpreter:
        """The interpreter at a path (asked once per path), or the current one."""
        if executable is None or Path(executable) == Path(sys.executable):
            return cls.current()
        return _probe(str(executable))

    @property
    def cache_tag(self) -> str:
        """The tag in its bytecode file names (`cpython-311`)."""
        major, minor = self.version.split(".")[:2]
        return f"{self.implementation}-{major}{minor}"

    def identity(self) -> dict[str, str]:
        data = asdict(self)
        del data["executable"]
        return data


@functools.cache
def _probe(executable: str) -> Interpreter:
    try:
        out = subprocess.run(
            [executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EnvError(
            f"cannot use Python interpreter {executable!r}: {exc}; "
            "give the path of a working python executable"
        ) from None
    return Interpreter(executable=executable, **json.loads(out))


def digest(data: Any) -> str:
    """sha256 of a canonical JSON rendering: sorted keys, no spaces, dates as ISO text."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class EnvSpec:
    """A package set to install (in order), where from, and on which interpreter."""

    requirements: tuple[Requirement, ...]
    index: IndexConfig = IndexConfig()
    interpreter: Interpreter = field(default_factory=Interpreter.current)
    base: PythonBase | None = None
    """A layer over an existing interpreter's packages; `interpreter` is then that one."""

    def __post_init__(self) -> None:
        check_unique(self.requirements)

    @functools.cached_property
    def canonical_requirements(self) -> list[str]:
        return sorted(canonical(r) for r in self.requirements)

    @functools.cached_property
    def key(self) -> str:
        data: dict[str, Any] = {
            "version": KEY_VERSION,
            "requirements": self.canonical_requirements,
            "interpreter": self.interpreter.identity(),
            "index": self.index.identity(),
        }
        if self.base is not None:  # absent otherwise: the keys of plain envs stay as they were
            data["base"] = self.base.identity()
        return digest(data)

    def env_key(self, lock: Lock) -> str:
        """The key of the env that holds `lock` (over the base, for a layer)."""
        key = lock.env_key(self.interpreter)
        return key if self.base is None else digest({"lock": key, "base": self.base.identity()})
