"""Bytecode compiled once per source file, and shared by every env that holds that file.

uv hardlinks each installed file from its cache, so ten envs with torch hold
torch's sources once; but bytecode is compiled per env, and compiling is not
even reproducible (marshal output varies run to run), so no two envs' `.pyc`
files would match. Instead each compiled `.pyc` is kept in the cache's
`objects/` store under the identity of its source file (its content, with
the size and mtime a `.pyc` header checks, its path in the env and the
interpreter's tag), and every later env holding that same source file links
the stored `.pyc` instead of compiling again. Modules are compiled with one
stable recorded path (Python puts the real path back when it loads them).
Python never writes a `.pyc` in place (it renames a new file over it), so a
shared copy is never changed through another env.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path

from envs.errors import BuildError
from envs.files import flocked, site_packages
from envs.proc import run as proc_run

RECORDED_PREFIX = "/sandbox-runner-env"
"""The directory every compiled module records instead of its env's (build) path."""


_COMPILEALL = (  # `python -m compileall`, whose worker processes die with it too
    "import compileall, concurrent.futures as cf, ctypes, functools, multiprocessing, os\n"
    "import signal, sys\n"
    "def tie(parent):\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)\n"
    "    if os.getppid() != parent:  # compileall died before the request: no signal comes\n"
    "        os._exit(1)\n"
    "cf.ProcessPoolExecutor = functools.partial(\n"
    "    cf.ProcessPoolExecutor, initializer=tie, initargs=(os.getpid(),),\n"
    "    mp_context=multiprocessing.get_context('fork'),\n"
    ")\n"
    "sys.argv[0] = 'compileall'\n"
    "sys.exit(int(not compileall.main()))\n"
)
"""PR_SET_PDEATHSIG (1) in each worker, and a worker whose compileall died before it asked
ends at once: a killed build leaves no compiler behind."""

LOCK = ".lock"
"""In `objects/`: builds hold it shared while they link and store, prune exclusively."""


def _key(source: Path, relative: str, tag: str) -> str:
    """The source's content, and what a `.pyc` header checks of it (mtime, size).

    Content, not inode: an inode is reused once its file is gone, and a reused
    inode with the same size and mtime would be served another file's bytecode.
    The mtime is kept because the header records it: bytecode stored for the
    same content with another mtime would be stale to Python.
    """
    data = source.read_bytes()
    st = source.stat()
    digest = hashlib.sha256(data).hexdigest()
    identity = f"{digest}:{len(data)}:{st.st_mtime_ns}:{relative}:{tag}"
    return hashlib.sha256(identity.encode()).hexdigest()


def _locked(objects: Path, mode: int) -> contextlib.AbstractContextManager[bool]:
    """Hold the store's lock in `mode` (fcntl.LOCK_SH / LOCK_EX, maybe | LOCK_NB)."""
    objects.mkdir(parents=True, exist_ok=True)
    return flocked(objects / LOCK, mode)


def _modules(env: Path, site: Path, tag: str) -> list[tuple[Path, Path]]:
    """(its .pyc, its path in the store) for every module of the env's site-packages."""
    found = []
    for folder, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                source = Path(folder) / name
                pyc = source.parent / "__pycache__" / f"{name[:-3]}.{tag}.pyc"
                key = _key(source, str(source.relative_to(env)), tag)
                found.append((pyc, Path(key[:2]) / key))
    return found


def compile_tree(python: Path, env: Path, objects: Path, tag: str) -> int:
    """Give every module of the env its bytecode, linking what the store has; returns links made."""
    with _locked(objects, fcntl.LOCK_SH):  # prune waits: nothing we link from vanishes
        return _compile_tree(python, env, objects, tag)


def _compile(python: Path, env: Path, site: Path, workers: int) -> None:
    """compileall over `site`: only the modules without up-to-date bytecode are compiled.

    `workers` 0 is a process per CPU, worth its start-up only for many modules.
    """
    proc = proc_run(
        [
            str(python),
            "-c",
            _COMPILEALL,
            "-q",
            "-q",  # files that do not compile (test data, other Pythons) are skipped, as pip does
            "-j",
            str(workers),
            "-s",
            str(env),
            "-p",
            RECORDED_PREFIX,
            str(site),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):  # 1: some file did not compile
        raise BuildError(f"compiling bytecode failed: {proc.stderr.strip() or proc.returncode}")


def _compile_tree(python: Path, env: Path, objects: Path, tag: str) -> int:
    site = site_packages(env)
    modules = _modules(env, site, tag)
    linked = 0
    for pyc, key in modules:
        stored = objects / key
        if stored.exists():
            pyc.parent.mkdir(exist_ok=True)
            os.link(stored, pyc)
            linked += 1
    missing = len(modules) - linked
    if missing:  # all linked from the store: nothing to compile, no interpreter to start
        _compile(python, env, site, workers=0 if missing > 64 else 1)
    for pyc, key in modules:
        stored = objects / key
        if pyc.exists() and pyc.stat().st_nlink == 1:
            stored.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another build stored it meanwhile
                os.link(pyc, stored)
    return linked


def prune(objects: Path) -> int | None:
    """Remove stored copies no env links to any more; returns the bytes freed.

    None: a build is linking from the store right now, so nothing is pruned
    (a copy with one link may be about to get its second).
    """
    if not objects.is_dir():
        return 0
    freed = 0
    with _locked(objects, fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
        if not held:
            return None
        for stored in objects.glob("*/*"):
            st = stored.stat()
            if st.st_nlink == 1:
                stored.unlink()
                freed += st.st_size
    return freed
