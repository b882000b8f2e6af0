"""`runner data ...`: the data cache jobs share (HF_HOME, TORCH_HOME, XDG_CACHE_HOME)."""

from __future__ import annotations

import click

from runner.cli.common import Group, emit, json_option, settings_of
from runner.units import format_size


@click.group(cls=Group)
def data() -> None:
    """Show and clean the data cache that jobs share (model and dataset downloads)."""


@data.command("show")
@json_option
@click.pass_context
def data_show(ctx: click.Context, as_json: bool) -> None:
    """Where the data cache is, what it holds, and its size."""
    from envs.files import tree_size

    folder = settings_of(ctx).data_cache_dir
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    size = tree_size(folder) if folder.is_dir() else 0
    row = {"path": str(folder), "size_bytes": size, "entries": entries}
    text = f"{folder}  {format_size(size)}" + "".join(f"\n  {name}" for name in entries)
    emit(row, as_json, text)


@data.command("clean")
@click.option("--force", is_flag=True, help="Clean even while jobs run (they may lose files).")
@click.pass_context
def data_clean(ctx: click.Context, force: bool) -> None:
    """Remove everything in the data cache; refused while a job runs, unless --force."""
    from envs.files import remove_tree, tree_size
    from runner.store import JobStore

    settings = settings_of(ctx)
    folder = settings.data_cache_dir
    live = [r.name for r in JobStore(settings.state_dir).scan()[0] if not r.done]
    if live and not force:
        raise click.ClickException(
            f"jobs are running and may be using the data cache: {', '.join(live)}; "
            "wait for them, or give --force"
        )
    freed = tree_size(folder) if folder.is_dir() else 0
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir() and not path.is_symlink():
            remove_tree(path)
        else:
            path.unlink(missing_ok=True)
    click.echo(f"removed {format_size(freed)} from {folder}")
