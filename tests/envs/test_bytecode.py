"""Bytecode is compiled into every env, shared between envs by content, and freed with them."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envs import EnvCache, bytecode
from envs.bytecode import RECORDED_PREFIX
from envs.gc import collect
from tests.procs import processes


def pyc(env_path: Path, module: str) -> Path:
    (found,) = env_path.glob(f"lib/python*/site-packages/{module}/__pycache__/__init__.*.pyc")
    return found


def test_envs_share_one_copy_of_identical_bytecode(cache: EnvCache, make_spec) -> None:
    first = cache.ensure(make_spec(["tiny-pkg"]))
    second = cache.ensure(make_spec(["other-pkg"]))  # both hold dep-a 2.0
    assert first.key != second.key
    a, b = pyc(first.path, "dep_a"), pyc(second.path, "dep_a")
    assert a.stat().st_ino == b.stat().st_ino and a.stat().st_nlink == 3  # two envs + the store
    assert pyc(first.path, "tiny_pkg").stat().st_nlink == 2  # one env + the store

    # the shared bytecode is what the interpreter loads
    code = "import dep_a; print(dep_a.__cached__)"
    out = subprocess.run(
        [str(first.python), "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(a)

    cache.remove(first.key)
    assert b.read_bytes() and b.stat().st_nlink == 2  # the other env keeps it
    stored = list((cache.root / "objects").glob("*/*"))
    assert b.stat().st_ino in {p.stat().st_ino for p in stored}
    # tiny_pkg's copy is kept (for a rebuild) with no env linking it; dep_a's by the other env
    assert {p.stat().st_nlink for p in stored} == {1, 2}
    cache.remove(second.key)
    assert list((cache.root / "objects").glob("*/*"))  # kept for rebuilds
    collect(cache)  # until gc finds no env links them
    assert list((cache.root / "objects").glob("*/*")) == []


def recorded_path(pyc_file: Path) -> str:
    """The source path compiled into a `.pyc` (Python rewrites it on load, so read the file)."""
    code = marshal.loads(pyc_file.read_bytes()[16:])  # after the 16-byte header
    path: str = code.co_filename
    return path


def test_recorded_path_is_stable_so_rebuilds_share(cache: EnvCache, make_spec) -> None:
    """Bytecode records one stable path, never the build folder it was compiled in."""
    env = cache.ensure(make_spec(["tiny-pkg"]))
    site = next(env.path.glob("lib/python*/site-packages"))
    recorded = recorded_path(pyc(env.path, "tiny_pkg"))
    expected = f"{RECORDED_PREFIX}/{site.relative_to(env.path)}/tiny_pkg/__init__.py"
    assert recorded == expected, recorded
    # and a module still names where it is loaded from
    out = subprocess.run(
        [str(env.python), "-c", "import tiny_pkg; print(tiny_pkg.main.__code__.co_filename)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == str(site / "tiny_pkg" / "__init__.py")


def test_bytecode_is_keyed_by_content_not_by_inode(tmp_path: Path) -> None:
    """A new file on a reused inode with the same size and mtime gets its own bytecode."""
    site = tmp_path / "env" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    source = site / "mod.py"
    source.write_text("A = 1\n")
    first = bytecode._key(source, "mod.py", "cpython-311")
    st = source.stat()
    source.unlink()
    source.write_text("A = 2\n")  # same size; the freed inode is likely reused
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert source.stat().st_size == st.st_size
    assert bytecode._key(source, "mod.py", "cpython-311") != first
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same content, other mtime
    source.write_text("A = 1\n")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert bytecode._key(source, "mod.py", "cpython-311") == first


def test_prune_waits_for_no_build_and_skips_while_one_links(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    (objects / "ab").mkdir(parents=True)
    (objects / "ab" / "abcd").write_bytes(b"x" * 10)  # linked by no env
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SHARED, str(objects / bytecode.LOCK)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert bytecode.prune(objects) is None  # a build is linking: nothing goes
        assert (objects / "ab" / "abcd").exists()
    finally:
        holder.kill()
        holder.communicate()
    assert bytecode.prune(objects) == 10
    assert not (objects / "ab" / "abcd").exists()


HOLD_SHARED = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_SH)\n"
    "print('held', flush=True)\n"
    "time.sleep(60)\n"
)


def _compilers(folder: Path) -> list[int]:
    return processes(
        lambda argv: bytecode._COMPILEALL.encode() in argv and str(folder).encode() in argv
    )


def test_compiler_workers_die_with_a_killed_build(tmp_path: Path) -> None:
    """kill -9 of the runner mid-build: no compileall worker goes on writing bytecode."""
    source = tmp_path / "src"
    body = "".join(f"def f{j}(x):\n    return x * {j} + sum(range({j}))\n" for j in range(200))
    for d in range(20):
        (source / f"p{d}").mkdir(parents=True)
        for i in range(200):
            (source / f"p{d}" / f"m{i}.py").write_text(body)
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from envs.proc import run; from envs.bytecode import _COMPILEALL;"
            "run([sys.executable, '-c', _COMPILEALL, '-q', '-j', '0', sys.argv[1]])",
            str(source),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while len(_compilers(source)) < 2:  # compileall and at least one worker
            assert time.monotonic() < deadline and parent.poll() is None, "compiled too fast"
            time.sleep(0.02)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _compilers(source):
            assert time.monotonic() < deadline, f"left running: {_compilers(source)}"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
        for pid in _compilers(source):
            os.kill(pid, 9)


def test_a_rebuild_whose_modules_are_all_stored_starts_no_compiler(
    cache: EnvCache, make_spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec(["tiny-pkg"])
    first = cache.ensure(spec)
    cache.remove(first.key)
    started: list[int] = []
    compile_ = bytecode._compile
    monkeypatch.setattr(
        bytecode, "_compile", lambda *a, **k: started.append(1) or compile_(*a, **k)
    )
    again = cache.ensure(spec)
    assert started == []  # every .pyc was linked from the store
    pycs = list(again.path.rglob("tiny_pkg/__pycache__/*.pyc"))
    assert pycs and all(p.stat().st_nlink > 1 for p in pycs)
    fresh = cache.ensure(make_spec(["other-pkg"]))  # new modules: the compiler runs, once
    assert started == [1] and list(fresh.path.rglob("other_pkg/__pycache__/*.pyc"))
