"""Inline script metadata (PEP 723): the block read as the specification says, and every
way it can be wrong refused in one line naming the script."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from envs.errors import EnvError
from envs.script import ScriptMetadata, ScriptMetadataError

BLOCK = """\
#!/usr/bin/env python
# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "Tiny_Pkg>=1",
#   "numpy; python_version < '3'",
# ]
#
# [tool.uv]
# exclude-newer = "2026-01-01T00:00:00Z"
# ///
import tiny_pkg
"""


def script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text(text)
    return path


def test_the_block_gives_dependencies_and_requires_python(tmp_path: Path) -> None:
    meta = ScriptMetadata.read(script(tmp_path, BLOCK))
    assert meta is not None
    assert [str(r) for r in meta.dependencies] == ["Tiny_Pkg>=1", 'numpy; python_version < "3"']
    assert str(meta.requires_python) == ">=3.11"


def test_the_block_is_read_whatever_the_line_ends_or_a_leading_bom(tmp_path: Path) -> None:
    for text in (BLOCK.replace("\n", "\r\n"), "\ufeff" + BLOCK.split("\n", 1)[1]):
        path = tmp_path / "train.py"
        path.write_bytes(text.encode())
        meta = ScriptMetadata.read(path)
        assert meta is not None and len(meta.dependencies) == 2, repr(text[:20])


@pytest.mark.parametrize(
    "text",
    [
        "import os\n",
        "# /// pyproject\n# x = 1\n# ///\n",  # another type of block
        "# /// script\n# dependencies = ['a']\nimport os\n",  # never closed: ignored
        "s = '''\n# /// script\n'''\n",
    ],
)
def test_a_script_without_a_whole_script_block_has_none(tmp_path: Path, text: str) -> None:
    assert ScriptMetadata.read(script(tmp_path, text)) is None


def test_a_file_that_cannot_be_read_has_none_and_running_it_says_why(tmp_path: Path) -> None:
    assert ScriptMetadata.read(tmp_path / "missing.py") is None
    assert ScriptMetadata.read(tmp_path) is None


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("dependencies = [", "is not valid TOML"),
        ("dependencies = 'numpy'", "`dependencies` must be a list of strings"),
        ("dependencies = [1]", "`dependencies` must be a list of strings"),
        ("dependencies = ['numpy>=>1']", "invalid requirement 'numpy>=>1'"),
        ("dependencies = ['numpy', 'NumPy>1']", "Duplicate dependency"),
        ("requires-python = '>=3.x'", "`requires-python` '>=3.x' is not a version specifier"),
        ("requires-python = 3.11", "`requires-python` 3.11 is not a version specifier"),
    ],
)
def test_a_bad_block_is_refused_in_one_line_naming_the_script(
    tmp_path: Path, body: str, said: str
) -> None:
    path = script(tmp_path, f"# /// script\n# {body}\n# ///\n")
    with pytest.raises(EnvError) as err:
        ScriptMetadata.read(path)
    message = str(err.value)
    assert said in message and str(path) in message and "\n" not in message


def test_two_script_blocks_are_refused(tmp_path: Path) -> None:
    block = "# /// script\n# dependencies = []\n# ///\n"
    with pytest.raises(ScriptMetadataError, match="appears 2 times"):
        ScriptMetadata.read(script(tmp_path, block + "x = 1\n" + block))


def test_a_package_given_on_the_command_line_replaces_the_scripts() -> None:
    meta = ScriptMetadata("t.py", (Requirement("numpy"), Requirement("tiny-pkg>=1")))
    merged = meta.merged([Requirement("Tiny_Pkg==0.5"), Requirement("dep-a")])
    assert [str(r) for r in merged] == ["numpy", "Tiny_Pkg==0.5", "dep-a"]


def test_requires_python_is_checked_against_the_interpreter() -> None:
    meta = ScriptMetadata("t.py", requires_python=SpecifierSet(">=3.12"))
    meta.check_python("3.12.1", "/usr/bin/python3.12")
    meta.check_python("3.13.0rc1", "/usr/bin/python3.13")  # a pre-release is a release here
    with pytest.raises(
        ScriptMetadataError,
        match=r"requires Python >=3\.12 .* is 3\.11\.7: set RUNNER_PYTHON to a "
        r"Python it allows \(>=3\.12\)$",
    ):
        meta.check_python("3.11.7", "/usr/bin/python3")


def test_a_lock_must_hold_each_declared_dependency_in_a_version_it_allows() -> None:
    meta = ScriptMetadata(
        "t.py",
        (Requirement("Tiny_Pkg>=1"), Requirement("numpy; python_version < '3'")),
    )
    meta.check_locked([("tiny-pkg", "1.0"), ("dep-a", "2.0")], "pylock.toml")  # numpy: not here
    with pytest.raises(ScriptMetadataError, match=r"'Tiny_Pkg>=1'.*locks tiny-pkg 0\.5"):
        meta.check_locked([("tiny-pkg", "0.5")], "pylock.toml")
    with pytest.raises(ScriptMetadataError, match=r"pylock\.toml does not lock it"):
        meta.check_locked([("dep-a", "2.0")], "pylock.toml")
