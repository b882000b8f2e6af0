"""`runner lock` and `runner envs export`: the exact set behind an env, as a file to keep."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from runner.cli.common import (
    base_options,
    base_python_of,
    check_script,
    index_of,
    package_options,
    packages_of,
    script_metadata,
    settings_of,
    write_output,
)

if TYPE_CHECKING:
    from envs.lockfile import Lock

FORMAT_CHOICE = click.Choice(["pylock", "conda-lock", "requirements"])


def write_lock(ctx: click.Context, lock: Lock, output: str | None, fmt: str | None) -> None:
    """Render `lock` to a file or stdout; the format: --format, else the name, else pylock."""
    from envs import Interpreter, formats

    if fmt is None:
        fmt = formats.format_of(Path(output)) if output and output != "-" else "pylock"
    interpreter = Interpreter.at(settings_of(ctx).python)
    text = formats.write(lock, fmt, interpreter)  # type: ignore[arg-type]
    if output is None or output == "-":
        click.echo(text, nl=False)
    else:
        write_output(output, text)
        count = len(lock.packages)
        click.echo(f"wrote {output} ({fmt}, {count} package{'s' * (count != 1)})", err=True)


output_option = click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write here (default: stdout); the name picks the format.",
)
format_option = click.option("--format", "fmt", type=FORMAT_CHOICE, help="Lockfile format.")


@click.command("lock")
@package_options
@click.option(
    "--script",
    type=click.Path(exists=True, dir_okay=False),
    help="With the packages a script declares in its `# /// script` block (PEP 723).",
)
@base_options
@output_option
@format_option
@click.pass_context
def lock(
    ctx: click.Context,
    with_: tuple[str, ...],
    req_files: tuple[str, ...],
    index_url: str | None,
    extra_index_url: tuple[str, ...],
    find_links: tuple[str, ...],
    script: str | None,
    base: str | None,
    base_python: str | None,
    output: str | None,
    fmt: str | None,
) -> None:
    """Resolve a package set (through the cache) and write its lock.

    \b
    runner lock --with torch==2.13.0 --with numpy -o pylock.toml
    runner lock -r requirements.in -o conda-lock.yml
    runner lock --script train.py -o pylock.toml
    runner train --lockfile pylock.toml examples/train_ddp.py

    Over a cached base (--base KEY|LOCKFILE) the lock holds the base's packages and the
    layer's, solved as the layer is: the whole set, for a machine that has neither. Over
    an interpreter (--base-python) it holds the layer's own packages; the base is named.
    """
    from runner.cli.progress import resolving
    from runner.spec import env_spec, open_cache

    settings = settings_of(ctx)
    reqs = packages_of(with_, req_files)
    meta = script_metadata(script)
    if script is not None and meta is None:
        raise click.UsageError(f"{script} has no `# /// script` block (PEP 723)")
    if meta is not None:
        reqs = meta.merged(reqs)
    if not reqs:  # refused before a base is looked up (or built, from a lockfile)
        raise click.UsageError("give the packages to lock: --with REQ, -r FILE or --script FILE")
    python = base_python_of(settings, base, base_python)
    if meta is not None:
        check_script(settings, meta, None, python)
    cache = open_cache(settings, writing=True)
    index = index_of(index_url, extra_index_url, find_links)
    with resolving(reqs):
        resolved = cache.resolve(env_spec(settings, reqs, index, python))
        base_env = cache.env_of(python) if python else None
        if base_env is not None:  # the base's pins and the layer's, as one full set
            pins = sorted({*cache.get(base_env).lock.pins(), *resolved.pins()})
            resolved = cache.resolve(env_spec(settings, pins, index))
    if python and base_env is None:
        click.echo(
            f"note: the lock holds the layer's own packages; its base, {python}, is named, "
            "not locked: a machine that uses it needs that interpreter's packages",
            err=True,
        )
    write_lock(ctx, resolved, output, fmt)
