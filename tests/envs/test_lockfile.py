"""The Lock: which file it installs for which interpreter, and where its relative paths point."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import get_args

import pytest

from envs import Interpreter
from envs.formats import read
from envs.lockfile import FILENAMES, Kind, Lock, LockedFile, LockedPackage, unit
from tests.wheelhouse import make_wheel


def _wheel(tag: str) -> LockedFile:
    return LockedFile(f"https://files.example/pkg-1.0-{tag}-{tag}-manylinux_2_17_x86_64.whl", "0")


def test_the_wheel_is_chosen_for_the_envs_interpreter_not_the_runners() -> None:
    here = Interpreter.current()
    major, minor = (int(p) for p in here.version.split(".")[:2])
    mine, other = f"cp{major}{minor}", f"cp{major}{minor + 1}"
    package = LockedPackage("pkg", "1.0", (_wheel(mine), _wheel(other)))
    assert package.file_for(here).filename.startswith(f"pkg-1.0-{mine}")
    newer = dataclasses.replace(here, version=f"{major}.{minor + 1}.0", executable="/other")
    assert package.file_for(newer).filename.startswith(f"pkg-1.0-{other}")


def test_a_relative_path_in_a_pylock_is_relative_to_the_lockfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    wheel = make_wheel(project / "wheels", "tiny-pkg", "1.0")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    lockfile = project / "pylock.toml"
    lockfile.write_text(
        'lock-version = "1.0"\ncreated-by = "test"\n\n[[packages]]\nname = "tiny-pkg"\n'
        f'version = "1.0"\nwheels = [{{ path = "wheels/{wheel.name}", '
        f'hashes = {{ sha256 = "{digest}" }} }}]\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the caller's folder must not matter
    lock = read(lockfile, Interpreter.current())
    assert f"tiny-pkg @ {wheel.resolve().as_uri()} " in lock.installable(Interpreter.current())


def test_every_kind_of_lock_is_one_unit_kept_under_its_filename() -> None:
    for kind in get_args(Kind):
        found = unit(kind)
        assert (found.name, found.filename) == (kind, FILENAMES[kind])
        assert found.conda == (kind == "conda")  # only conda's packages are rattler's
    assert Lock("", "conda").filename == "conda-lock.json"


def test_each_kind_reads_its_text_into_the_same_packages() -> None:
    url = "https://files.example/pkg-1.0-py3-none-any.whl"
    pylock = 'lock-version = "1.0"\n[[packages]]\nname = "Pkg"\nversion = "1.0"\n'
    pylock += f'wheels = [{{url = "{url}", hashes = {{sha256 = "ab"}}}}]\n'
    hashed = f"pkg @ {url} --hash=sha256:ab\n"
    here = Interpreter.current()
    as_pylock, as_hashed = Lock(pylock, "pylock"), Lock(hashed, "requirements")
    assert as_pylock.packages[0].files == as_hashed.packages[0].files
    assert as_pylock.pins() == as_hashed.pins() == ["pkg==1.0"]
    assert as_pylock.installable(here) == as_hashed.installable(here, skip=lambda n, v: False)
    assert as_pylock.env_key(here) != as_hashed.env_key(here)  # each kind keys its own way
