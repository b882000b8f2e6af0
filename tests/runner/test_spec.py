"""JobSpec refuses bad input at the edge, with a message naming the bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.errors import InvalidJobError
from runner.spec import FunctionEntry, JobSpec, ScriptEntry

HERE = str(Path(__file__))


def train(lr: float, epochs: int = 1) -> None:
    print(lr, epochs)


def script(**fields: Any) -> JobSpec:
    return JobSpec.create(entry=ScriptEntry(kind="script", target=HERE), **fields)


def test_a_valid_spec_round_trips_through_json() -> None:
    spec = JobSpec.create(
        entry=FunctionEntry.of(train, {"lr": 0.1}),
        requirements=["Torch==2.13.0", "numpy"],
        framework="torch",
        nproc_per_node=2,
        env={"MY_VAR": "1"},
    )
    again = JobSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert [str(r) for r in again.requirements] == ["Torch==2.13.0", "numpy"]
    assert "def train(lr: float" in spec.entry.source  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["Upper", "has_underscore", "-lead", "trail-", "x" * 64, ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidJobError, match="job name"):
        script(name=name)


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", ""])
def test_bad_env_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidJobError, match="environment variable name"):
        script(env={key: "x"})


def test_non_json_arguments_are_refused() -> None:
    with pytest.raises(InvalidJobError, match=r"func_args\['model'\] is not JSON"):
        FunctionEntry.of(train, {"lr": 0.1, "model": object()})
    with pytest.raises(InvalidJobError, match="func_args"):
        FunctionEntry.of(train, {"lr": float("nan")})


def test_lambdas_and_unreadable_functions_are_refused() -> None:
    with pytest.raises(InvalidJobError, match="lambda"):
        FunctionEntry.of(lambda: None)
    namespace: dict[str, Any] = {}
    exec("def made_up():\n    pass\n", namespace)
    with pytest.raises(InvalidJobError, match="cannot read the source of function 'made_up'"):
        FunctionEntry.of(namespace["made_up"])
    with pytest.raises(InvalidJobError, match="plain Python function"):
        FunctionEntry.of(print)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["nproc_per_node", "num_nodes"])
def test_counts_below_one_are_refused(field: str) -> None:
    with pytest.raises(InvalidJobError, match=field):
        script(framework="torch", requirements=["torch"], **{field: 0})


def test_several_ranks_need_torch() -> None:
    with pytest.raises(InvalidJobError, match="torchrun"):
        script(nproc_per_node=2)
    with pytest.raises(InvalidJobError, match="add a torch requirement"):
        script(framework="torch", nproc_per_node=2)


def test_bad_requirements_are_refused_with_their_text() -> None:
    with pytest.raises(InvalidJobError, match="'torch=='"):
        script(requirements=["torch=="])
    with pytest.raises(InvalidJobError, match="Duplicate dependency in packages: 'a' and 'A'"):
        script(requirements=["a", "A"])


def test_missing_script_and_bad_module_are_refused() -> None:
    with pytest.raises(InvalidJobError, match="does not exist"):
        JobSpec.create(entry={"kind": "script", "target": "/no/such/file.py"})
    with pytest.raises(InvalidJobError, match="not a dotted Python name"):
        JobSpec.create(entry={"kind": "module", "target": "no such"})


def test_timeout_must_be_positive() -> None:
    with pytest.raises(InvalidJobError, match="timeout"):
        script(timeout=0)
