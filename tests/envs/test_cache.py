"""The cache against real uv and real venvs, including crashes and concurrency."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from envs import BuildError, Env, EnvCache, Interpreter, formats
from tests.conftest import UvSpy

HELPERS = Path(__file__).parent.parent / "helpers"


def run_in_env(env: Env, code: str) -> str:
    return subprocess.run(
        [str(env.python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_build_then_hit_without_running_uv(cache: EnvCache, uv_spy: UvSpy, make_spec) -> None:
    first = cache.ensure(make_spec(["tiny-pkg"]))
    assert (
        run_in_env(first, "import tiny_pkg, dep_a; print(tiny_pkg.__version__, dep_a.__version__)")
        == "1.0 2.0"
    )
    assert (
        subprocess.run(
            [str(first.bin_dir / "tiny")], capture_output=True, text=True, check=True
        ).stdout
        == "tiny ok\n"
    )
    calls = len(uv_spy.calls())

    again = cache.ensure(make_spec(["  Tiny_Pkg "]))
    assert again.key == first.key and again.path == first.path
    assert len(uv_spy.calls()) == calls, "a cache hit must not run uv"


def test_a_wheel_named_by_its_path_is_locked_with_its_hash_and_installed(
    cache: EnvCache, make_spec, wheelhouse: Path
) -> None:
    wheel = wheelhouse / "tiny_pkg-0.5-py3-none-any.whl"
    env = cache.ensure(make_spec([f"tiny-pkg @ {wheel.as_uri()}"]))
    assert run_in_env(env, "import tiny_pkg; print(tiny_pkg.__version__)") == "0.5"
    (locked,) = [p for p in env.lock.packages if p.name == "tiny-pkg"]
    assert (
        locked.direct and locked.files[0].sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    exported = formats.write(env.lock, "requirements", Interpreter.current())
    assert f"tiny-pkg @ {wheel.as_uri()}" in exported  # its file, not a name an index must hold
    assert "dep-a==1.0" in exported


def test_metadata_and_lock_are_published_with_the_env(cache: EnvCache, make_spec) -> None:
    env = cache.ensure(make_spec(["tiny-pkg"]))
    assert env.meta.requirements == ["tiny-pkg"]
    assert env.meta.packages == ["dep-a==2.0", "tiny-pkg==1.0"]
    assert env.meta.size_bytes > 0
    assert {p.name for p in env.lock.packages} == {"dep-a", "tiny-pkg"}
    assert all(f.sha256 and f.url for p in env.lock.packages for f in p.files)
    assert [e.key for e in cache.ready()] == [env.key]


def test_specs_resolving_to_one_lock_share_one_env(
    cache: EnvCache, uv_spy: UvSpy, make_spec
) -> None:
    first = cache.ensure(make_spec(["tiny-pkg"]))
    second = cache.ensure(make_spec(["tiny-pkg>=0.9", "dep-a"]))
    assert second.key == first.key
    assert len(uv_spy.calls("pip compile")) == 2  # both specs were resolved...
    assert len(uv_spy.calls("venv")) == 1  # ...but only one environment was built
    assert len(cache.spec_keys(first.key)) == 2


def test_different_pins_get_different_envs(cache: EnvCache, make_spec) -> None:
    new = cache.ensure(make_spec(["tiny-pkg==1.0"]))
    old = cache.ensure(make_spec(["tiny-pkg==0.5"]))
    assert new.key != old.key
    assert run_in_env(old, "import dep_a; print(dep_a.__version__)") == "1.0"


def test_failing_build_leaves_cache_unchanged(cache: EnvCache, make_spec) -> None:
    cache.ensure(make_spec(["tiny-pkg"]))
    before = sorted(p.relative_to(cache.root) for p in cache.root.rglob("*") if "uv" not in p.parts)
    with pytest.raises(BuildError) as err:
        cache.ensure(make_spec(["no-such-package-xyz"]))
    assert "no-such-package-xyz" in str(err.value)
    assert "not found" in str(err.value)  # uv's own explanation is carried
    after = sorted(p.relative_to(cache.root) for p in cache.root.rglob("*") if "uv" not in p.parts)
    new = [p for p in after if p not in before and p.parts[0] != "locks"]
    assert new == []
    assert list(cache.tmp_dir.iterdir()) == []


def test_unsatisfiable_pin_is_a_clear_error(cache: EnvCache, make_spec) -> None:
    with pytest.raises(BuildError, match=r"tiny-pkg==9\.9"):
        cache.ensure(make_spec(["tiny-pkg==9.9"]))


def _spawn_ensure(
    cache: EnvCache, uv_spy: UvSpy, wheelhouse: Path, go: Path, *reqs: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(HELPERS / "ensure_env.py"),
            str(cache.root),
            str(uv_spy.path),
            str(wheelhouse),
            str(go),
            *reqs,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_many_processes_one_new_key_build_once(
    cache: EnvCache, uv_spy: UvSpy, wheelhouse: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    spellings = ["tiny-pkg", "Tiny_Pkg", "tiny.pkg", "TINY-PKG", "tiny_pkg ", "tiny-pkg"]
    procs = [_spawn_ensure(cache, uv_spy, wheelhouse, go, s) for s in spellings]
    time.sleep(0.5)  # let every process import and wait at the start line
    go.touch()
    keys = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        keys.add(out.strip())
    assert len(keys) == 1
    assert len(uv_spy.calls("venv")) == 1
    assert len(uv_spy.calls("pip compile")) == 1
    assert len(cache.ready()) == 1


def test_threads_asking_at_once_build_once(cache: EnvCache, uv_spy: UvSpy, make_spec) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(cache.ensure(make_spec(["other-pkg"])).key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(set(results)) == 1 and len(results) == 4
    assert len(uv_spy.calls("venv")) == 1


@pytest.mark.parametrize("stage", ["pip compile", "venv", "pip sync"])
def test_builder_killed_mid_build_leaves_nothing_usable(
    cache: EnvCache, uv_spy: UvSpy, wheelhouse: Path, tmp_path: Path, make_spec, stage: str
) -> None:
    go = tmp_path / "go"
    go.touch()
    uv_spy.hang_after(stage)
    proc = _spawn_ensure(cache, uv_spy, wheelhouse, go, "tiny-pkg")
    deadline = time.monotonic() + 60
    while not any(stage in c for c in uv_spy.calls()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # uv finishes the stage, then hangs
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()

    spec = make_spec(["tiny-pkg"])
    assert cache.lookup(spec) is None
    assert cache.ready() == []
    uv_spy.hang_after(None)
    env = cache.ensure(spec)
    assert run_in_env(env, "import tiny_pkg; print(tiny_pkg.__version__)") == "1.0"
    assert not list(cache.tmp_dir.glob("build-*")), "the next build cleans what the dead one left"


def _lease_holder(cache: EnvCache, uv_spy: UvSpy, wheelhouse: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [
            sys.executable,
            str(HELPERS / "hold_lease.py"),
            str(cache.root),
            str(uv_spy.path),
            str(wheelhouse),
            "tiny-pkg",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = holder.stdout.readline() if holder.stdout else ""
    assert line.startswith("leased "), line
    return holder


def test_lease_blocks_removal_and_releases_on_death(
    cache: EnvCache, uv_spy: UvSpy, wheelhouse: Path, make_spec
) -> None:
    from envs.gc import collect

    holder = _lease_holder(cache, uv_spy, wheelhouse)
    try:
        (key,) = [e.key for e in cache.ready()]
        result = collect(cache, max_size=0)
        assert result.in_use == [key] and result.removed == []
        assert (cache.envs_dir / key / "bin" / "python").exists()
    finally:
        holder.kill()
        holder.communicate()
    result = collect(cache, max_size=0)  # the lease died with its holder
    assert result.removed == [key]
    assert cache.ready() == []
    assert cache.lookup(make_spec(["tiny-pkg"])) is None


@pytest.mark.parametrize("damage", ["truncated", "missing", "a folder"])
def test_a_damaged_env_is_named_in_one_line_and_built_again_by_the_next_job(
    cache: EnvCache, uv_spy: UvSpy, make_spec, damage: str
) -> None:
    from envs.cache import META, EnvDamagedError

    spec = make_spec(["tiny-pkg"])
    env = cache.ensure(spec)
    meta = env.path / META
    if damage == "truncated":
        meta.write_text(meta.read_text()[:40])
    else:
        meta.unlink()
        if damage == "a folder":
            meta.mkdir()
    found, damaged = cache.scan()
    assert found == [] and [d.key for d in damaged] == [env.key]
    (problem,) = (str(d) for d in damaged)
    assert len(problem.splitlines()) == 1 and env.key[:12] in problem and META in problem
    with pytest.raises(EnvDamagedError):
        cache.get(env.key[:12])
    builds, resolves = len(uv_spy.calls("venv")), len(uv_spy.calls("pip compile"))

    again = cache.ensure(spec)  # taken out, then built again from its lock: the same key
    assert again.key == env.key and len(uv_spy.calls("venv")) == builds + 1
    assert len(uv_spy.calls("pip compile")) == resolves
    assert run_in_env(again, "import tiny_pkg; print(tiny_pkg.__version__)") == "1.0"
    assert [e.key for e in cache.ready()] == [env.key] and cache.scan()[1] == []

    (again.path / META).write_text("{}")  # and by its lock (a lockfile job)
    assert cache.ensure(spec, lock=again.lock).meta.packages == env.meta.packages

    for name in ("pylock.toml", META):  # its lock damaged too: resolved again
        (again.path / name).write_text("[[")
    assert cache.ensure(spec).key == env.key
    assert len(uv_spy.calls("pip compile")) == resolves + 1


def test_a_damaged_env_in_use_stays_until_its_job_ends_then_gc_takes_it(
    cache: EnvCache, uv_spy: UvSpy, wheelhouse: Path, make_spec
) -> None:
    from envs import EnvError
    from envs.cache import META
    from envs.gc import collect

    holder = _lease_holder(cache, uv_spy, wheelhouse)
    try:
        (key,) = [e.key for e in cache.ready()]
        (cache.envs_dir / key / META).write_text("not json")
        with pytest.raises(EnvError, match=r"damaged .* a running job uses it now"):
            cache.ensure(make_spec(["tiny-pkg"]))
        result = collect(cache)  # no age or size asked: only the damaged, and it is in use
        assert result.in_use == [key] and (cache.envs_dir / key / "bin" / "python").exists()
    finally:
        holder.kill()
        holder.communicate()
    assert collect(cache).removed == [key]
    assert not (cache.envs_dir / key).exists() and cache.scan() == ([], [])


def test_a_damaged_env_with_nothing_left_in_it_is_removed_too(cache: EnvCache, make_spec) -> None:
    env = cache.ensure(make_spec(["tiny-pkg"]))
    shutil.rmtree(env.path)
    env.path.mkdir()  # an rm -rf cut short, say
    assert [d.key for d in cache.scan()[1]] == [env.key]
    assert cache.remove(env.key) == 0 and not env.path.exists()
