"""Layered envs over an existing interpreter's packages, with real uv and real venvs.

The base is a venv made here holding tiny-pkg 0.5 (and dep-a 1.0, which it
needs); a layer adds other-pkg, which needs dep-a too: solved against the base's
dep-a, it installs other-pkg alone and sees the base's packages through a .pth.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from envs import BuildError, EnvCache, EnvInUseError, EnvSpec, IndexConfig, Interpreter
from envs.base import PTH_FILE, probe
from envs.builder import default_uv
from tests.conftest import UvSpy
from tests.envs.test_cache import run_in_env


def make_base(folder: Path, wheelhouse: Path, *packages: str) -> Path:
    """A venv holding `packages`, installed from the test wheelhouse: a base python."""
    uv = default_uv()
    if not folder.exists():
        subprocess.run([uv, "venv", "--quiet", str(folder)], check=True)
    python = folder / "bin" / "python"
    install = [uv, "pip", "install", "--quiet", "--python", str(python), "--no-index"]
    subprocess.run([*install, "--find-links", str(wheelhouse), *packages], check=True)
    return python


@pytest.fixture
def base_python(tmp_path: Path, wheelhouse: Path) -> Path:
    return make_base(tmp_path / "base", wheelhouse, "tiny-pkg==0.5")


def layer(python: Path, offline: IndexConfig, *requirements: str) -> EnvSpec:
    return EnvSpec(
        tuple(Requirement(r) for r in requirements),
        offline,
        Interpreter.at(python),
        base=probe(python),
    )


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_layer_sees_its_base_and_holds_only_its_own_packages(
    cache: EnvCache, base_python: Path, offline: IndexConfig
) -> None:
    env = cache.ensure(layer(base_python, offline, "other-pkg"))
    said = run_in_env(
        env, "import tiny_pkg, dep_a, other_pkg; print(tiny_pkg.__version__, dep_a.__version__)"
    )
    assert said == "0.5 1.0"  # the base's dep-a, not the newest (2.0): the base is not replaced
    site = next(env.path.glob("lib/python*/site-packages"))
    own = {p.name for p in site.iterdir()}
    assert any(n.startswith("other_pkg") for n in own)
    assert not any(n.startswith(("tiny_pkg", "dep_a")) for n in own)  # nothing of the base
    assert (site / PTH_FILE).read_text().splitlines() == list(probe(base_python).site_dirs)
    # what the base already holds as asked is not resolved again
    same = cache.ensure(layer(base_python, offline, "tiny-pkg<1"))
    assert run_in_env(same, "import tiny_pkg; print(tiny_pkg.__file__)").startswith(
        str(base_python.parents[1])
    )


def test_a_changed_base_is_a_new_layer(
    cache: EnvCache, base_python: Path, offline: IndexConfig, wheelhouse: Path
) -> None:
    before = layer(base_python, offline, "other-pkg")
    first = cache.ensure(before)
    assert layer(base_python, offline, "other-pkg").key == before.key  # same base, same key
    make_base(base_python.parents[1], wheelhouse, "tiny-pkg==1.0")  # upgraded in place
    after = layer(base_python, offline, "other-pkg")
    assert after.key != before.key
    second = cache.ensure(after)
    assert second.key != first.key
    assert run_in_env(second, "import tiny_pkg; print(tiny_pkg.__version__)") == "1.0"


def test_a_pin_against_the_base_is_refused_naming_it(
    cache: EnvCache, base_python: Path, offline: IndexConfig
) -> None:
    with pytest.raises(BuildError) as caught:
        cache.ensure(layer(base_python, offline, "dep-a==2.0"))
    said = str(caught.value).splitlines()[0]
    assert "over the base" in said and str(base_python) in said
    assert cache.ready() == []


def test_a_set_that_extends_a_cached_env_is_a_layer_over_it_holding_what_a_full_env_would(
    cache: EnvCache,
    make_spec,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    uv_spy: UvSpy,
) -> None:
    base = cache.ensure(make_spec(["tiny-pkg==0.5"]))
    spec = make_spec(["tiny-pkg==0.5", "other-pkg"])
    env = cache.ensure(spec)
    assert env.meta.base_env == base.key  # picked by itself
    full = EnvCache(tmp_path / "alone", uv_binary=default_uv()).ensure(spec)
    assert env.lock.pins() == full.lock.pins() == ["dep-a==1.0", "other-pkg==1.0", "tiny-pkg==0.5"]
    code = "import dep_a, other_pkg, tiny_pkg; print(tiny_pkg.__version__, dep_a.__version__)"
    assert run_in_env(env, code) == run_in_env(full, code) == "0.5 1.0"
    own = {p.name for p in next(env.path.glob("lib/python*/site-packages")).iterdir()}
    assert not any(n.startswith(("tiny_pkg", "dep_a")) for n in own)  # nothing of the base again
    calls = len(uv_spy.calls())
    assert cache.ensure(spec).key == env.key and len(uv_spy.calls()) == calls  # a hit
    with pytest.raises(EnvInUseError, match="is the base of 1 layered"):
        cache.remove(base.key)


def test_a_cached_env_whose_versions_a_full_resolve_would_change_is_not_a_base(
    cache: EnvCache,
    make_spec,  # type: ignore[no-untyped-def]
) -> None:
    newest = cache.ensure(make_spec(["other-pkg"]))  # other-pkg 1.0 with dep-a 2.0
    env = cache.ensure(make_spec(["other-pkg", "tiny-pkg==0.5"]))  # tiny 0.5 needs dep-a < 2
    assert "dep-a==2.0" in newest.lock.pins() and "dep-a==1.0" in env.lock.pins()
    assert env.meta.base_env is None  # a full env, as a resolve alone gives


def test_an_empty_env_is_never_a_base(
    cache: EnvCache,
    make_spec,  # type: ignore[no-untyped-def]
) -> None:
    """A job with no packages makes an empty env: it holds nothing a set could share."""
    empty = cache.ensure(make_spec([]))
    assert empty.meta.packages == {} or not empty.meta.packages
    env = cache.ensure(make_spec(["tiny-pkg"]))
    assert env.meta.base_env is None
    cache.remove(empty.key)  # the base of nothing: removed without a word
