"""`runner config`: every setting with its value and where it came from, and where packages
come from for a job, and why (which option, file or variable)."""

from __future__ import annotations

from typing import Any

import click

from runner.cli.common import emit, index_of, json_option, settings_of

_ROWS = (  # (pip's name, where IndexConfig.shown() keeps it)
    ("index-url", ("index_url",)),
    ("extra-index-url", ("extra_index_urls",)),
    ("find-links", ("find_links",)),
    ("no-index", ("no_index",)),
    ("index-strategy", ("index_strategy",)),
    ("constraint", ("constraints",)),
    ("trusted-host", ("connection", "trusted_hosts")),
    ("cert", ("connection", "cert")),
    ("client-cert", ("connection", "client_cert")),
    ("proxy", ("connection", "proxy")),
    ("timeout", ("connection", "timeout")),
    ("retries", ("connection", "retries")),
    ("conda-mirror", ("connection", "conda_mirrors")),
)


def source_lines(shown: dict[str, Any]) -> list[str]:
    """An `IndexConfig.shown()` as aligned lines: each option, its value, where it came from."""
    origins = shown.get("origins", {})
    lines = []
    for name, path in _ROWS:
        value: Any = shown
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict):  # conda mirrors: channel -> mirror
            value = " ".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            value = " ".join(value)
        if name == "no-index":
            value = "yes" if value else None
        if not value and name == "index-url" and not shown.get("no_index"):
            value = "https://pypi.org/simple"
        origin = origins.get(path[-1], "default")
        lines.append(f"  {name:<16} {value or '-'}" + (f"  ({origin})" if value else ""))
    return lines


def settings_rows(settings: Any, environ: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each setting: its value (a URL's password shown as `****`), and its origin (its
    `RUNNER_*` variable, or the default)."""
    from envs.pipconfig import mask

    rows = {}
    for name in type(settings).model_fields:
        var = f"RUNNER_{name.upper()}"
        value = getattr(settings, name)
        if isinstance(value, str):
            value = mask(value)
        elif isinstance(value, list):
            value = [mask(v) if isinstance(v, str) else v for v in value]
        rows[name] = {
            "value": value
            if value is None or isinstance(value, (bool, int, float, list))
            else str(value),
            "origin": var if environ.get(var) else "default",
        }
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


@click.command("config")
@json_option
@click.pass_context
def config(ctx: click.Context, as_json: bool) -> None:
    """Show every setting and where a job's packages come from, each with its origin.

    Package options are read in this order, the later winning: pip's files, PIP_*
    variables, RUNNER_* settings, then the job's options."""
    import os

    from envs.pipconfig import config_files
    from envs.spec import IndexConfig

    settings = settings_of(ctx)
    shown = IndexConfig.layered(index_of(None, (), ()), settings.index(os.environ)).shown()
    files = [str(f) for f in config_files(os.environ) if f.is_file()]
    rows = settings_rows(settings, dict(os.environ))
    lines = ["settings (RUNNER_* variables > defaults):"]
    lines += [
        f"  {name:<20} {_shown(row['value'])}"
        + ("" if row["origin"] == "default" else f"  ({row['origin']})")
        for name, row in rows.items()
    ]
    lines += ["package sources (job options > RUNNER_* > PIP_* > pip's files):"]
    lines += source_lines(shown)
    lines.append("pip configuration files read: " + (", ".join(files) or "none"))
    lines += [f"not passed to uv: {u['option']} ({u['origin']})" for u in shown["unused"]]
    emit({"settings": rows, "sources": shown, "pip_files": files}, as_json, "\n".join(lines))
