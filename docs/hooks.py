"""Build hooks of the documentation site (mkdocs.yml `hooks:`): the reference pages are made
from the code at build time, never written by hand.

- `<!-- settings -->` in a page becomes the table of every setting, from `RunnerSettings`;
- `<!-- imports:PACKAGE -->` becomes a drawing of which module of PACKAGE imports which,
  read from the code (`import_graph`; tests/test_imports.py holds it to no circle);
- the benchmark chart (benchmarks/results/chart.png) becomes the site's `chart.png`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def settings_table() -> str:
    """Every setting: its variable, its default, what it does (the field's description)."""
    from pydantic_core import PydanticUndefined

    from runner.settings import RunnerSettings

    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for name, field in RunnerSettings.model_fields.items():
        if field.default_factory is not None:
            default = "(per user: see below)" if name.endswith("_dir") else "(computed)"
        elif field.default is PydanticUndefined or field.default is None:
            default = "-"
        else:
            default = f"`{field.default}`" if field.default not in ("", []) else "-"
        what = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `RUNNER_{name.upper()}` | {default} | {what} |")
    return "\n".join(rows)


def _imported(path: Path, package: str) -> set[str]:
    """The modules of `package` that a file imports as it runs (at its top or in a function;
    not those under `if TYPE_CHECKING:`, which only the type checker reads)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            for child in node.orelse if name == "TYPE_CHECKING" else [*node.body, *node.orelse]:
                self.visit(child)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.split(".")[0] == package)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module == package:  # `from envs import cache`: a module, or a name
                found.update(f"{package}.{a.name}" for a in node.names)
            elif node.module and node.module.split(".")[0] == package:
                found.add(node.module)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Each module of `package` (a folder of ROOT) and the modules of it that it imports."""
    modules = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return {
        name: {m for m in _imported(path, package) if m in modules and m != name}
        for name, path in modules.items()
        if name != package  # the package's own `__init__`: its face, which imports the rest
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of a graph (its strongly connected parts of 2 modules or more)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            part = []
            while True:
                other = stack.pop()
                part.append(other)
                if other == module:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def imports_drawing(package: str) -> str:
    """A Mermaid drawing of the package's imports: an arrow from each module to each it uses."""
    graph = import_graph(package)
    short = {m: m.removeprefix(f"{package}.") for m in graph}
    lines = ["```mermaid", "graph LR"]
    for module in sorted(graph):
        lines += [f"  {short[module]} --> {short[used]}" for used in sorted(graph[module])]
        if not graph[module]:
            lines.append(f"  {short[module]}")
    return "\n".join([*lines, "```"])


def on_page_markdown(markdown: str, **_: Any) -> str:
    if "<!-- settings -->" in markdown:
        markdown = markdown.replace("<!-- settings -->", settings_table())
    return re.sub(r"<!-- imports:(\w+) -->", lambda m: imports_drawing(m[1]), markdown)


def on_files(files: Any, config: Any, **_: Any) -> Any:
    """The benchmark report's chart, as `chart.png` of the site (it lives in benchmarks/)."""
    from mkdocs.structure.files import File

    chart = ROOT / "benchmarks" / "results" / "chart.png"
    files.append(File.generated(config, "chart.png", abs_src_path=str(chart)))
    return files
