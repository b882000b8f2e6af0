"""The documentation stays true: getting started runs as written (fresh cache and state, its
output what the page shows), README's links lead somewhere, and the site builds strictly
(in `.ci/run`, which fails on a broken link or a missing page)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
RUNNER = str(Path(sys.executable).parent / "runner")


def blocks(page: Path, kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)\n```", page.read_text(), re.DOTALL)


def readme_command(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```sh\n(.+?)\n```", (ROOT / "README.md").read_text())
    assert found, marker
    return found[1]


def pattern(shown: str) -> str:
    """A line as the page shows it, with what differs between runs (times, sizes, names,
    losses, keys) left open."""
    text = re.escape(shown)
    text = re.sub(r"[a-z][0-9a-f]{11}", r"\\S+", text)  # job names, env keys
    return re.sub(r"-?\d+(\\\.\d+)?", r"-?[\\d.]+", text)


def test_getting_started_shows_the_readme_commands() -> None:
    main, tests = blocks(DOCS / "getting-started.md", "sh")
    assert main == readme_command("main-command")
    assert tests == readme_command("test-command")


@pytest.mark.torch
def test_getting_started_runs_as_written_from_an_empty_cache(
    torch_cache: Path, tmp_path: Path
) -> None:
    """Not `torch_cache` itself (the page starts from nothing): its check that torch is here."""
    main = blocks(DOCS / "getting-started.md", "sh")[0]
    train = main.split("&& ")[-1].replace(".venv/bin/runner", RUNNER)
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(tmp_path / "cache"),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
        "RUNNER_SERVER": "0",
    }

    def run() -> list[str]:
        proc = subprocess.run(
            train.split(),
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return (proc.stderr + proc.stdout).splitlines()

    seen = run()
    shown = blocks(DOCS / "getting-started.md", "text")[0].splitlines()
    for line in shown:
        if line != "...":
            assert any(re.fullmatch(pattern(line), s) for s in seen), (line, seen)
    again = run()  # "Using env ... replaces the first two lines"
    assert any(line.startswith("Using env ") for line in again), again
    assert not any(line.startswith(("Resolved ", "Installed ")) for line in again), again


def test_readme_is_short_and_its_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def test_every_docs_page_is_in_the_site() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("*.md"):
        assert f": {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"


def test_every_test_and_test_file_the_docs_name_is_there() -> None:
    """A guarantee on a page names the test that holds it: that test exists."""
    tests = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    named = 0
    for page in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        text = page.read_text()
        for name in re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)`", text):
            assert name in tests, f"{page.name} names {name}, which no test file holds"
            named += 1
        for path in re.findall(r"`(tests/[\w/.-]+\.(?:py|sh))(?:::\w+)?`", text):
            assert (ROOT / path).exists(), f"{page.name} names {path}, which is not there"
    assert named >= 10  # read, not empty
