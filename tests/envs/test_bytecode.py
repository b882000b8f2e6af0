"""Bytecode is compiled into every env, shared between envs by content, and freed with them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from envs import EnvCache
from envs.gc import collect


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
    stored = [p for p in (cache.root / "objects").rglob("*") if p.is_file()]
    assert b.stat().st_ino in {p.stat().st_ino for p in stored}
    # tiny_pkg's copy is kept (for a rebuild) with no env linking it; dep_a's by the other env
    assert {p.stat().st_nlink for p in stored} == {1, 2}
    cache.remove(second.key)
    assert [p for p in (cache.root / "objects").rglob("*") if p.is_file()]  # kept for rebuilds
    collect(cache)  # until gc finds no env links them
    assert [p for p in (cache.root / "objects").rglob("*") if p.is_file()] == []


def test_recorded_path_is_stable_so_rebuilds_share(cache: EnvCache, make_spec) -> None:
    """A module's code names where it is loaded from, not the build folder it was compiled in."""
    env = cache.ensure(make_spec(["tiny-pkg"]))
    out = subprocess.run(
        [str(env.python), "-c", "import tiny_pkg; print(tiny_pkg.main.__code__.co_filename)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith(str(env.path)) and "/tmp/build-" not in out
