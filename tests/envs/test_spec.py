from __future__ import annotations

import dataclasses
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import EnvSpec, IndexConfig, Interpreter
from envs.errors import DuplicateRequirementError, InvalidIndexError
from envs.requirements import parse_all

BASE = ["torch==2.13.0", "numpy>=1.26,<3", "scikit-learn[alldeps]", "typing_extensions"]


def key(reqs: list[str], **kwargs: object) -> str:
    return EnvSpec(tuple(parse_all(reqs)), **kwargs).key  # type: ignore[arg-type]


def _respell(name: str, rng: random.Random) -> str:
    out = []
    for ch in name:
        if ch in "-_.":
            out.append(rng.choice(["-", "_", ".", "--", "_."]))
        else:
            out.append(ch.upper() if rng.random() < 0.5 else ch.lower())
    return "".join(out)


def _variant(req: str, rng: random.Random) -> str:
    """The same requirement, written differently: case, separators, spacing."""
    for i, ch in enumerate(req):
        if ch in "=<>[;!~":
            name, rest = req[:i], req[i:]
            break
    else:
        name, rest = req, ""
    pad = " " * rng.randint(0, 3)
    rest = rest.replace(",", "," + " " * rng.randint(0, 2))
    return pad + _respell(name, rng) + pad + rest + pad


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(), order=st.permutations(range(len(BASE))))
def test_key_ignores_case_separators_spacing_and_order(seed: int, order: list[int]) -> None:
    rng = random.Random(seed)
    variant = [_variant(BASE[i], rng) for i in order]
    assert key(variant) == key(BASE), variant


@pytest.mark.parametrize(
    "changed",
    [
        ["torch==2.12.0", *BASE[1:]],  # another pin
        [*BASE[:2], "scikit-learn", BASE[3]],  # extra dropped
        [*BASE, "requests"],  # another package
        [*BASE[:3], "typing_extensions; python_version<'3.12'"],  # marker
    ],
)
def test_key_changes_with_the_package_set(changed: list[str]) -> None:
    assert key(changed) != key(BASE)


def test_key_changes_with_the_interpreter() -> None:
    here = Interpreter.current()
    other = dataclasses.replace(here, version="3.12.0")
    assert key(BASE, interpreter=other) != key(BASE, interpreter=here)
    assert key(BASE, interpreter=dataclasses.replace(here, executable="/elsewhere")) == key(BASE)


@pytest.mark.parametrize(
    "index",
    [
        IndexConfig(index_url="https://mirror.example/simple"),
        IndexConfig(extra_index_urls=("https://extra.example/simple",)),
        IndexConfig(find_links=("/opt/wheels",)),
        IndexConfig(no_index=True),
    ],
)
def test_key_changes_with_the_index(index: IndexConfig) -> None:
    assert key(BASE, index=index) != key(BASE)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(DuplicateRequirementError):
        EnvSpec(tuple(parse_all(["numpy", "NumPy==2"])))


def test_index_layers_job_over_settings_over_pip_env() -> None:
    pip_env = IndexConfig.from_pip(
        {
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_INDEX_URL": "https://pip/simple",
            "PIP_FIND_LINKS": "/a /b",
            "PIP_NO_INDEX": "0",
        }
    )
    settings_layer = IndexConfig(extra_index_urls=("https://settings/simple",))
    job = IndexConfig.from_urls(["https://job/simple", "https://job-extra/simple"])
    merged = IndexConfig.layered(job, settings_layer, pip_env)
    assert merged.index_url == "https://job/simple"
    assert merged.extra_index_urls == ("https://job-extra/simple",)
    assert merged.find_links == ("/a", "/b")
    assert merged.no_index is False
    assert IndexConfig.layered(IndexConfig(), pip_env).index_url == "https://pip/simple"


def test_relative_find_links_become_absolute(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert IndexConfig(find_links=("wheels",)).find_links == (f"{tmp_path}/wheels",)


def test_naming_pypi_explicitly_is_the_default_index() -> None:
    assert key(BASE, index=IndexConfig.from_urls(["https://pypi.org/simple"])) == key(BASE)


def test_the_jobs_explicit_index_wins_over_the_pip_variables() -> None:
    pip_env = IndexConfig.from_pip(
        {
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_INDEX_URL": "https://mirror.example/simple",
            "PIP_NO_INDEX": "1",
        }
    )
    assert pip_env.no_index
    pypi = IndexConfig.layered(IndexConfig.from_urls(["https://pypi.org/simple"]), pip_env)
    assert pypi.index_url == "https://pypi.org/simple" and not pypi.no_index
    mirror = IndexConfig.layered(IndexConfig(index_url="https://other.example/simple"), pip_env)
    assert mirror.index_url == "https://other.example/simple" and not mirror.no_index
    # a job that names no index keeps the user's choice
    assert IndexConfig.layered(IndexConfig(), pip_env).no_index


@pytest.mark.parametrize("url", ["not a url", "pypi.org/simple", "ftp://x/simple", ""])
def test_an_index_that_is_not_a_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidIndexError, match="is not a URL"):
        IndexConfig(index_url=url or " ")
    with pytest.raises(InvalidIndexError, match="is not a URL"):
        IndexConfig(extra_index_urls=(url or " ",))
