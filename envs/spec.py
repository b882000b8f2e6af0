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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement

from envs.errors import EnvError, InvalidIndexError

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
class IndexConfig:
    """Where packages come from. `index_url=None` means uv's default (PyPI)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "find_links", tuple(_absolute(f) for f in self.find_links))
        for url in (self.index_url, *self.extra_index_urls):
            if url is not None and not _INDEX_URL.match(url):
                raise InvalidIndexError(
                    f"index URL {url!r} is not a URL: give http(s)://HOST/PATH or file:///PATH "
                    "(a folder of wheels goes to find-links)"
                )

    def identity(self) -> dict[str, Any]:
        """What the key holds: naming PyPI, the default, is the same as naming no index."""
        data = asdict(self)
        if self.index_url is not None and self.index_url.rstrip("/") in PYPI:
            data["index_url"] = None
        return data

    @classmethod
    def from_urls(cls, urls: Sequence[str]) -> IndexConfig:
        """Kubeflow's `pip_index_urls`: the first is the index, the rest are extra indexes."""
        return cls(index_url=urls[0], extra_index_urls=tuple(urls[1:])) if urls else cls()

    @classmethod
    def from_pip_env(cls, environ: Mapping[str, str]) -> IndexConfig:
        """The user's pip variables, which uv itself never reads."""
        return cls(
            index_url=environ.get("PIP_INDEX_URL") or None,
            extra_index_urls=tuple(environ.get("PIP_EXTRA_INDEX_URL", "").split()),
            find_links=tuple(environ.get("PIP_FIND_LINKS", "").split()),
            no_index=environ.get("PIP_NO_INDEX", "").strip().lower() in _TRUE,
        )

    @classmethod
    def layered(cls, *layers: IndexConfig) -> IndexConfig:
        """Each field from the first layer that sets it (job, then settings, then pip env).

        The main index (`index_url`, or `no_index`) is one choice: the first layer
        that makes it wins whole, so a job's explicit index undoes PIP_NO_INDEX.
        """
        main = next((la for la in layers if la.index_url or la.no_index), cls())
        return cls(
            index_url=main.index_url,
            extra_index_urls=next(
                (la.extra_index_urls for la in layers if la.extra_index_urls), ()
            ),
            find_links=next((la.find_links for la in layers if la.find_links), ()),
            no_index=main.no_index,
        )


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
