"""The code's own imports, as the architecture page draws them (docs/hooks.py): `envs` has no
import circle and never imports `runner`; the drawing on the page is made from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parent.parent


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks


def test_envs_has_no_import_circle_and_never_imports_runner() -> None:
    hooks = _hooks()
    graph = hooks.import_graph("envs")
    assert "envs.lockfile" in graph and "envs.locked" in graph["envs.conda"]  # read, not empty
    assert hooks.circles(graph) == []
    uses_runner = {m for m, path in _files("envs").items() if hooks._imported(path, "runner")}
    assert uses_runner == set()


def test_a_circle_is_found_where_there_is_one() -> None:
    hooks = _hooks()
    assert hooks.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert hooks.circles({"a": {"b"}, "b": set()}) == []


def test_the_architecture_page_draws_the_imports() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert "<!-- imports:envs -->" in page
    drawn = _hooks().on_page_markdown(page)
    assert "```mermaid" in drawn and "conda --> locked" in drawn
    assert "<!-- imports:" not in drawn


def _files(package: str) -> dict[str, Path]:
    return {p.stem: p for p in (ROOT / package).rglob("*.py")}
