"""An existing interpreter's installed packages, used as they are: the base of a layered env.

A GPU machine's system Python with CUDA torch, an image's Python, a venv: a layer
env over it holds only the job's own packages and sees the base's through a
`.pth` file, so nothing of the base is copied or linked again. The base's
identity (its interpreter, every distribution on its path with its version,
and the modification times of its site folders, which change whenever
something is installed or removed there) goes into the layer's key: a changed
base is a new layer, never a stale one.
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envs.errors import EnvError
from envs.spec import digest

_PROBE = """
import importlib.metadata as md, json, os, sys
dirs = [p for p in sys.path if p and os.path.isdir(p)
        and os.path.basename(p) in ("site-packages", "dist-packages")]
dists = sorted({(d.metadata["Name"] or "", d.version) for d in md.distributions(path=dirs)})
print(json.dumps({
    "executable": sys.executable,
    "dirs": dirs,
    "dists": [list(d) for d in dists if d[0]],
    "stamps": [os.stat(p).st_mtime_ns for p in dirs],
}))
"""

PTH_FILE = "_sandbox_runner_base.pth"
"""In a layer's site-packages: the base's site folders, one per line, after the layer's own."""


@dataclass(frozen=True)
class PythonBase:
    """The packages of an existing interpreter, as found when it was asked."""

    executable: str
    site_dirs: tuple[str, ...]
    packages: tuple[tuple[str, str], ...]
    """(normalized name, version) of every distribution on its site folders."""
    fingerprint: str

    def identity(self) -> dict[str, str]:
        return {"python": self.executable, "fingerprint": self.fingerprint}

    @property
    def versions(self) -> dict[str, str]:
        return dict(self.packages)

    def pins(self) -> list[str]:
        """`name==version` of each base package whose version is a valid pin (constraints)."""
        pins = []
        for name, version in self.packages:
            try:
                Version(version)
            except InvalidVersion:
                continue
            pins.append(f"{name}=={version}")
        return pins

    def provides(self, name: str, version: str) -> bool:
        return self.versions.get(canonicalize_name(name)) == version


def probe(executable: str | Path) -> PythonBase:
    """The base at `executable` as it is now: asked again whenever a site folder changed."""
    first = _probe(str(executable), ())
    return _probe(str(executable), _stamps(first.site_dirs))


def _stamps(dirs: tuple[str, ...]) -> tuple[int, ...]:
    stamps = []
    for folder in dirs:
        try:
            stamps.append(Path(folder).stat().st_mtime_ns)
        except OSError:
            stamps.append(0)
    return tuple(stamps)


@functools.lru_cache(maxsize=64)
def _probe(executable: str, _stamps: tuple[int, ...]) -> PythonBase:
    """Asked once per state of its site folders (`_stamps`)."""
    try:
        out = subprocess.run(
            [executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
        ).stdout
        data = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        said = getattr(exc, "stderr", "") or exc
        raise EnvError(
            f"cannot use {executable!r} as a base python: {said}; "
            "give the path of a working python executable"
        ) from None
    packages = tuple(sorted({(canonicalize_name(n), v) for n, v in data["dists"]}))
    return PythonBase(
        executable=executable,
        site_dirs=tuple(data["dirs"]),
        packages=packages,
        fingerprint=digest(
            {"executable": data["executable"], "packages": packages, "stamps": data["stamps"]}
        ),
    )
