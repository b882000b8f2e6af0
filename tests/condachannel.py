"""A local conda channel built by the tests, and locks of it written by rattler and conda-lock.

No conda channel is reachable from these machines, so the tests make their own:
tiny conda archives written in the `.tar.bz2` format by hand (info/index.json,
info/paths.json, the files), indexed with rattler, solved with rattler's solver,
and locked as pixi.lock (rattler's `LockFile`) or conda-lock.yml (conda-lock's
models). Hashes always come from the files, never typed.

The channel's `python` stands in for conda-forge's (which cannot be fetched
here): a prefix whose `bin/python` links to this machine's system Python with a
`pyvenv.cfg`, so the prefix is its own `sys.prefix` and conda's noarch Python
packages land in its `lib/pythonX.Y/site-packages` as they would.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import rattler
import yaml

PLATFORM = "linux-64"
SYSTEM_PYTHON = Path("/usr/bin/python3").resolve()
"""A Python every user (and the sandbox) can run: root's own may live under /root."""

DATA_TEXT = "hello from a conda package\n"
MODULE = """\
import sys
from pathlib import Path

VALUE = 42
DATA = (Path(sys.prefix) / "share" / "tiny" / "data.txt").read_text()
"""


def system_python_version() -> str:
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def conda_package(
    channel: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    links: dict[str, str] | None = None,
    depends: Sequence[str] = (),
    noarch: str | None = "generic",
    subdir: str = "noarch",
    build: str = "0",
) -> Path:
    """Write `name-version-build.tar.bz2` under `channel/subdir`: files, symlinks, metadata."""
    index_json: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": list(depends),
        "subdir": subdir,
        "license": "MIT",
        "timestamp": 1700000000000,
    }
    if noarch:
        index_json["noarch"] = noarch
    if subdir != "noarch":
        index_json.update(arch="x86_64", platform="linux")
    links = links or {}
    paths = [
        {
            "_path": path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        for path, data in files.items()
    ] + [{"_path": path, "path_type": "softlink", "size_in_bytes": 0} for path in links]
    members = {
        "info/index.json": json.dumps(index_json).encode(),
        "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}).encode(),
        "info/files": "".join(f"{p}\n" for p in [*files, *links]).encode(),
        **files,
    }
    if noarch == "python":
        link = {"noarch": {"type": "python"}, "package_metadata_version": 1}
        members["info/link.json"] = json.dumps(link).encode()
    (channel / subdir).mkdir(parents=True, exist_ok=True)
    out = channel / subdir / f"{name}-{version}-{build}.tar.bz2"
    with tarfile.open(out, "w:bz2") as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
        for path, target in links.items():
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, target, 0
            tar.addfile(info)
    return out


@dataclass(frozen=True)
class Channel:
    path: Path
    python_version: str

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def archive(self, name: str) -> Path:
        (found,) = self.path.glob(f"*/{name}-[0-9]*.tar.bz2")
        return found

    def reindex(self) -> None:
        _in_child(_INDEX, str(self.path))

    def solve(self, specs: Sequence[str], platform: str = PLATFORM) -> list[Any]:
        """rattler's solution of `specs` from this channel alone."""
        found = json.loads(_in_child(_SOLVE, self.url, platform, *specs))
        return [_record(json.loads(text)) for text in found]


# rattler's async calls (index, solve) run in a child process that ends without the
# interpreter's finalization (`os._exit` once its work is written): py-rattler 0.28 can
# crash a process at exit after them ("Fatal Python error: PyGILState_Release ...
# finalizing" when they follow an install, about 1 exit in 5; a SIGSEGV after an index,
# seen once), which in the test process would end the whole run. The runner only installs.
_INDEX = """
import asyncio, os, sys
from rattler import index
asyncio.run(index.index_fs(sys.argv[1], write_zst=False, write_shards=False))
os._exit(0)
"""
_SOLVE = """
import asyncio, json, os, sys
import rattler
url, platform, *specs = sys.argv[1:]
solve = rattler.solve([rattler.Channel(url)], specs, platforms=[platform, "noarch"],
                      virtual_packages=[])
print(json.dumps([r.to_json() for r in asyncio.run(solve)]), flush=True)
os._exit(0)
"""


def _in_child(code: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    ).stdout


def _record(data: dict[str, Any]) -> Any:
    """A solved record back from its JSON (`RepoDataRecord.to_json`)."""
    package = rattler.PackageRecord(
        name=data["name"],
        version=data["version"],
        build=rattler.BuildString(data["build"]),
        build_number=data["build_number"],
        subdir=data["subdir"],
        arch=data.get("arch"),
        platform=data.get("platform"),
        noarch=rattler.NoArchType(data.get("noarch")),
        depends=data.get("depends", []),
        sha256=bytes.fromhex(data["sha256"]),
        md5=bytes.fromhex(data["md5"]),
        size=data.get("size"),
        license=data.get("license"),
    )
    return rattler.RepoDataRecord(package, data["fn"], data["url"], data["channel"])


def make_channel(root: Path) -> Channel:
    """python (the stand-in), tiny-data (noarch data), tiny-mod (noarch: python, needs both)."""
    version = system_python_version()
    short = ".".join(version.split(".")[:2])
    channel = root / "channel"
    cfg = (
        f"home = {SYSTEM_PYTHON.parent}\ninclude-system-site-packages = false\n"
        f"version = {version}\n"
    )
    # conda-forge's own kind of names and versions, which are no pip requirement
    conda_package(channel, "_tiny_mutex", "1.1.1w", {"share/tiny/mutex": b""}, build="conda")
    conda_package(
        channel,
        "python",
        version,
        {"pyvenv.cfg": cfg.encode()},
        depends=["_tiny_mutex"],
        links={
            f"bin/python{short}": str(SYSTEM_PYTHON),
            "bin/python3": f"python{short}",
            "bin/python": f"python{short}",
        },
        noarch=None,
        subdir=PLATFORM,
    )
    conda_package(channel, "tiny-data", "1.0", {"share/tiny/data.txt": DATA_TEXT.encode()})
    conda_package(
        channel,
        "tiny-mod",
        "1.0",
        {"site-packages/tiny_mod.py": MODULE.encode()},
        depends=["python", "tiny-data >=1"],
        noarch="python",
    )
    found = Channel(channel, version)
    found.reindex()
    return found


@dataclass(frozen=True)
class Wheel:
    """A PyPI package of a lock: name, version, URL and the sha256 of the file."""

    name: str
    version: str
    url: str
    sha256: str

    @classmethod
    def of(cls, wheel: Path) -> Wheel:
        dist, version = wheel.name.split("-")[:2]
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        return cls(dist.replace("_", "-"), version, wheel.as_uri(), sha)


def write_pixi_lock(
    path: Path,
    environments: dict[str, list[Any]],
    channel: Channel,
    *,
    pypi: Sequence[Path | Wheel] = (),
    platform: str = PLATFORM,
) -> Path:
    """A pixi.lock of solved records per environment, as rattler writes it; `pypi` wheels go
    into every environment, with the sha256 of each file (rattler's writer takes none)."""
    wheels = [w if isinstance(w, Wheel) else Wheel.of(w) for w in pypi]
    where = rattler.LockPlatform(platform)
    lock = rattler.LockFile([where])
    for name, records in environments.items():
        lock.set_channels(name, [rattler.LockChannel(channel.url)])
        for record in records:
            lock.add_conda_package(name, where, record)
        for wheel in wheels:
            lock.add_pypi_package(name, where, wheel.name, wheel.version, wheel.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock.to_path(path)
    if wheels:
        data = yaml.safe_load(path.read_text())
        hashes = {w.url: w.sha256 for w in wheels}
        for entry in data["packages"]:
            if "pypi" in entry:
                entry["sha256"] = hashes[entry["pypi"]]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_conda_lock(
    path: Path, records: list[Any], channel: Channel, *, pypi: Sequence[Path] = ()
) -> Path:
    """A conda-lock.yml of solved records (and pip wheels), with conda-lock's own models."""
    from conda_lock.lockfile import write_conda_lock_file
    from conda_lock.lockfile.v2prelim.models import (
        HashModel,
        LockedDependency,
        Lockfile,
        LockMeta,
    )
    from conda_lock.models.channel import Channel as LockChannel

    package = [
        LockedDependency(
            name=r.name.normalized,
            version=str(r.version),
            manager="conda",
            platform=PLATFORM,
            dependencies={d.split(" ")[0]: " ".join(d.split(" ")[1:]) for d in r.depends},
            url=r.url,
            hash=HashModel(md5=r.md5.hex(), sha256=r.sha256.hex()),
            categories={"main"},
        )
        for r in records
    ] + [
        LockedDependency(
            name=w.name.split("-")[0].replace("_", "-"),
            version=w.name.split("-")[1],
            manager="pip",
            platform=PLATFORM,
            dependencies={},
            url=w.as_uri(),
            hash=HashModel(sha256=hashlib.sha256(w.read_bytes()).hexdigest()),
            categories={"main"},
        )
        for w in pypi
    ]
    lockfile = Lockfile(
        package=package,
        metadata=LockMeta(
            content_hash={PLATFORM: "tests"},
            channels=[LockChannel.from_string(channel.url)],
            platforms=[PLATFORM],
            sources=[],
        ),
    )
    write_conda_lock_file(lockfile, path, metadata_choices=None)
    return path


class ChannelHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a channel folder; while `stall` is set to an unset event, downloads of
    tiny-data wait for it."""

    stall: threading.Event | None = None
    requested: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requested.append(self.path)
        if self.stall is not None and "tiny-data" in self.path:
            self.stall.wait(120)
        super().do_GET()


@contextlib.contextmanager
def serve(channel: Channel) -> Iterator[tuple[str, type[ChannelHandler]]]:
    """The channel over HTTP on loopback (a mirror), and its handler class (to stall it)."""

    class Handler(ChannelHandler):
        requested: ClassVar[list[str]] = []

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(channel.path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    finally:
        if Handler.stall is not None:
            Handler.stall.set()
        server.shutdown()
        server.server_close()
