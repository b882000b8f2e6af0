from __future__ import annotations

from pathlib import Path

import pytest

from envs.errors import DuplicateRequirementError, EnvError, InvalidRequirementError
from envs.requirements import canonical, merge, parse, parse_all, read_file


def _merged(runtime: list[str], job: list[str]) -> list[str]:
    return [str(r) for r in merge(parse_all(runtime), parse_all(job))]


def test_merge_example_from_the_original_backend() -> None:
    assert _merged(["torch==1.9.0", "numpy"], ["torch==2.0.0", "scipy"]) == [
        "numpy",
        "torch==2.0.0",
        "scipy",
    ]


def test_job_package_replaces_runtime_package_across_spellings() -> None:
    assert _merged(["Torch_Vision>=0.1", "numpy"], ["torch.vision==0.2"]) == [
        "numpy",
        "torch.vision==0.2",
    ]


def test_runtime_duplicates_keep_the_last_occurrence() -> None:
    assert _merged(["numpy<2", "scipy", "NumPy>=1"], ["pandas"]) == ["scipy", "NumPy>=1", "pandas"]


def test_empty_job_keeps_runtime_packages() -> None:
    assert _merged(["torch"], []) == ["torch"]


def test_duplicate_job_packages_name_both_spellings() -> None:
    with pytest.raises(DuplicateRequirementError) as err:
        merge([], parse_all(["Scikit_Learn==1.0", "scikit-learn>=1"]))
    message = str(err.value)
    assert "Scikit_Learn==1.0" in message and "scikit-learn>=1" in message
    assert isinstance(err.value, ValueError)  # what the Kubeflow SDK raises


@pytest.mark.parametrize("text", ["torch==", "not a requirement!", "", "   ", "numpy>=>1"])
def test_unparsable_requirement_is_quoted_in_one_line(text: str) -> None:
    with pytest.raises(InvalidRequirementError) as err:
        parse(text)
    assert repr(text) in str(err.value)
    assert "\n" not in str(err.value)  # packaging's caret drawing is left out


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Torch>=2.0", "torch >= 2.0"),
        ("foo_bar.baz", "Foo-Bar-Baz"),
        ("pkg[B,a]>=1,<2", "PKG[a, b] <2, >=1"),
        ("pkg; python_version>='3.8'", 'pkg ; python_version >= "3.8"'),
    ],
)
def test_canonical_form_ignores_spelling(a: str, b: str) -> None:
    assert canonical(parse(a)) == canonical(parse(b))


def test_requirements_file(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\nnumpy>=1  # trailing\n\nTorch==2.13.0\n")
    assert [canonical(r) for r in read_file(path)] == ["numpy>=1", "torch==2.13.0"]


def test_requirements_file_refuses_pip_options(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("--index-url https://example.invalid/simple\nnumpy\n")
    with pytest.raises(InvalidRequirementError, match="--index-url"):
        read_file(path)


def test_missing_requirements_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequirementError, match=r"nope\.txt"):
        read_file(tmp_path / "nope.txt")


def test_a_pyproject_gives_its_project_dependencies(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "trainer"\ndependencies = ["Torch==2.13.0", "numpy>=2"]\n'
        '[project.optional-dependencies]\nplots = ["matplotlib"]\n'
    )
    assert [str(r) for r in read_file(path)] == ["Torch==2.13.0", "numpy>=2"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[tool.poetry.dependencies]\nnumpy = "*"\n', "has no static [project] dependencies"),
        ('[project]\nname = "x"\ndynamic = ["dependencies"]\n', "they are dynamic"),
        ('[project]\ndependencies = "numpy"\n', "must be a list of strings"),
        ("[project\n", "is not valid TOML"),
        ('[project]\ndependencies = ["numpy", "NumPy"]\n', "Duplicate dependency"),
        ('[project]\ndependencies = ["numpy>=>1"]\n', "invalid requirement 'numpy>=>1'"),
    ],
)
def test_a_pyproject_without_usable_dependencies_is_refused_in_one_line(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    with pytest.raises(EnvError) as err:
        read_file(path)
    assert said in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
