"""The project's own files: pixi manifest, README and CI agree with each other."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
from packaging.requirements import Requirement

ROOT = Path(__file__).parent.parent


def test_pixi_manifest_validates_against_the_official_schema() -> None:
    schema = json.loads((ROOT / "tests/data/pixi-manifest.schema.json").read_text())
    manifest = tomllib.loads((ROOT / "pixi.toml").read_text())
    jsonschema.validate(manifest, schema)


def test_every_pixi_task_command_exists() -> None:
    """Each task runs `python`, the project's own script, or a tool its pixi env installs."""
    manifest = tomllib.loads((ROOT / "pixi.toml").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    extras = manifest["pypi-dependencies"]["sandbox-runner"]["extras"]
    scripts = [Path(script).name for script in pyproject["tool"]["setuptools"]["script-files"]]
    provided = {"python", *project.get("scripts", {}), *scripts}
    for extra in extras:
        provided |= {Requirement(r).name for r in project["optional-dependencies"][extra]}
    for name, task in manifest["tasks"].items():
        cmd = task["cmd"] if isinstance(task, dict) else task
        for part in re.split(r"&&|\|\|", cmd):
            program, *args = part.split()
            assert program in provided, (
                f"pixi task {name!r} runs {program!r}, which nothing installs"
            )
            for word in args:
                if word.endswith(".py"):
                    assert (ROOT / word).is_file(), f"pixi task {name!r}: {word} is missing"
            if program == "python" and "-m" in args:
                module = args[args.index("-m") + 1].split(".")[0]
                mine = (ROOT / module / "__main__.py").is_file()
                assert mine or module in provided, f"pixi task {name!r}: no module {module!r}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    match = re.search(r"<!-- test-command -->\n```sh\n(.+?)\n```", readme)
    assert match, "README.md marks its test command with <!-- test-command -->"
    assert match[1] in ci.splitlines()


def test_pixi_train_task_is_the_readme_main_command() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- main-command -->\n```sh\n(.+?)\n```", readme)
    assert match, "README.md marks its main command with <!-- main-command -->"
    train = tomllib.loads((ROOT / "pixi.toml").read_text())["tasks"]["train"]["cmd"]
    assert match[1].endswith(".venv/bin/" + train)
