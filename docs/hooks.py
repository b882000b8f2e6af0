"""Build hooks of the documentation site (mkdocs.yml `hooks:`): the reference pages are made
from the code at build time, never written by hand.

- `<!-- settings -->` in a page becomes the table of every setting, from `RunnerSettings`;
- the benchmark chart (benchmarks/results/chart.png) becomes the site's `chart.png`.
"""

from __future__ import annotations

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


def on_page_markdown(markdown: str, **_: Any) -> str:
    if "<!-- settings -->" in markdown:
        markdown = markdown.replace("<!-- settings -->", settings_table())
    return markdown


def on_files(files: Any, config: Any, **_: Any) -> Any:
    """The benchmark report's chart, as `chart.png` of the site (it lives in benchmarks/)."""
    from mkdocs.structure.files import File

    chart = ROOT / "benchmarks" / "results" / "chart.png"
    files.append(File.generated(config, "chart.png", abs_src_path=str(chart)))
    return files
