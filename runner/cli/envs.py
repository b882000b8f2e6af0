"""`runner envs ...`: inspect, build and clean the environment cache."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from envs import Env

from runner.cli.common import (
    Group,
    duration_option,
    emit,
    index_of,
    json_option,
    locked_env,
    lockfile_of,
    lockfile_options,
    package_options,
    packages_of,
    settings_of,
    size_option,
)
from runner.cli.config import source_lines
from runner.cli.locks import format_option, output_option, write_lock
from runner.units import format_size


@click.group(cls=Group)
def envs() -> None:
    """Inspect and clean the environment cache."""


def _env_row(env: Env, specs: list[str] | None = None) -> dict[str, Any]:
    row = {
        "key": env.key,
        "path": str(env.path),
        "requirements": env.meta.requirements,
        "packages": env.meta.packages,
        "interpreter": env.meta.interpreter,
        "index": env.meta.index,
        "size_bytes": env.meta.size_bytes,
        "created": env.meta.created.isoformat(),
        "last_used": env.last_used.isoformat(),
        "base": env.meta.base,
        "base_env": env.meta.base_env,
        "conda": env.meta.conda,
    }
    if specs is not None:
        row["specs"] = specs
    return row


def _base_of(row: dict[str, Any]) -> str | None:
    """How a layer names its base: the cached env's key, or the base python."""
    if row["base_env"]:
        return str(row["base_env"][:12])
    return str(row["base"]["python"]) if row["base"] else None


def _over(row: dict[str, Any]) -> str:
    base = _base_of(row)
    return f"  (layer over {base})" if base else ""


def _what(row: dict[str, Any]) -> str:
    """What an env holds, in a line: its requirements, or where its conda lock came from."""
    conda = row["conda"]
    if conda:
        counts = conda["packages"]
        return (
            f"conda: {conda['source']} {conda['environment']!r} on {conda['platform']}, "
            f"{counts['conda']} conda + {counts['pypi']} PyPI packages"
        )
    return " ".join(row["requirements"]) or "(empty)"


@envs.command("list")
@json_option
@click.pass_context
def envs_list(ctx: click.Context, as_json: bool) -> None:
    """List cached environments, least recently used first."""
    from runner.spec import open_cache

    found, damaged = open_cache(settings_of(ctx)).scan()
    for problem in damaged:  # the others are listed all the same
        click.echo(f"warning: {problem}", err=True)
    rows = [_env_row(e) for e in found]
    lines = [f"{'KEY':<12}  {'SIZE':>10}  {'LAST USED':<19}  REQUIREMENTS"]
    lines += [
        f"{r['key'][:12]}  {format_size(r['size_bytes']):>10}  "
        f"{r['last_used'][:19]:<19}  {_what(r)}" + _over(r)
        for r in rows
    ]
    total = sum(r["size_bytes"] for r in rows)
    lines.append(f"{len(rows)} environment(s), {format_size(total)}")
    emit(rows, as_json, "\n".join(lines))


@envs.command("show")
@click.argument("key")
@json_option
@click.pass_context
def envs_show(ctx: click.Context, key: str, as_json: bool) -> None:
    """Show one environment: its spec, lock, size and last use. KEY may be a prefix."""
    from runner.spec import open_cache

    cache = open_cache(settings_of(ctx))
    env = cache.get(key)
    row = _env_row(env, cache.spec_keys(env.key))
    row["lock"] = env.lock.text
    text = "\n".join(
        [
            f"key:          {env.key}",
            f"path:         {env.path}",
            f"requirements: {_what(row)}",
            f"python:       {env.meta.interpreter['version']} ({env.meta.interpreter['abi']})",
            f"size:         {format_size(env.meta.size_bytes)}",
            f"layer over:   {_base_of(row) or '-'}",
            f"created:      {row['created']}",
            f"last used:    {row['last_used']}",
            f"built in:     {env.meta.build_seconds:.2f} s",
            *_conda_lines(env.meta.conda),
            "sources:",
            *source_lines(env.meta.index),
            "packages:",
            *(
                f"  {p.name}=={p.version}" + ("  (conda)" if p.manager == "conda" else "")
                for p in env.lock.packages
            ),
        ]
    )
    emit(row, as_json, text)


def _conda_lines(conda: dict[str, Any] | None) -> list[str]:
    if not conda:
        return []
    return [
        f"conda:        {conda['source']}, environment {conda['environment']!r}, "
        f"platform {conda['platform']}",
        f"channels:     {' '.join(conda['channels']) or '-'}",
    ]


@envs.command("rm")
@click.argument("keys", nargs=-1, required=True)
@click.pass_context
def envs_rm(ctx: click.Context, keys: tuple[str, ...]) -> None:
    """Remove environments (refused for one a running job uses). KEY may be a prefix."""
    from envs import EnvError
    from envs.cache import EnvInUseError
    from runner.spec import open_cache
    from runner.warm import served

    cache = open_cache(settings_of(ctx))
    found, unknown = [], []
    for key in keys:  # every key is checked before any env is removed
        try:
            found.append(cache.match(key))
        except EnvError as exc:
            unknown.append(str(exc))
    if unknown:
        raise click.ClickException("; ".join(unknown) + "; nothing was removed")
    served.drop(found)  # their standbys end first, never after the env is gone
    busy = 0
    layers = {e.key for e in cache.ready() if e.meta.base_env}
    found.sort(key=lambda k: k not in layers)  # layers before the bases they stand on
    for key in found:
        try:
            freed = cache.remove(key)
        except EnvInUseError as exc:  # the others still go; this one is named
            click.echo(f"error: {exc}", err=True)
            busy += 1
            continue
        click.echo(f"removed {key[:12]} ({format_size(freed)} of its own)")
    if found and not busy:  # uv's cache still links the files it had from there
        click.echo("`runner envs gc` also takes the downloads no env holds any more", err=True)
    if busy:
        sys.exit(1)


@envs.command("gc")
@click.option("--max-size", callback=size_option, help="Evict least recently used above this.")
@click.option("--older-than", callback=duration_option, help="Evict envs unused this long (7d).")
@json_option
@click.pass_context
def envs_gc(
    ctx: click.Context, max_size: int | None, older_than: timedelta | None, as_json: bool
) -> None:
    """Evict environments by size and age (damaged ones always); those in use are kept."""
    from envs.gc import collect
    from runner.spec import open_cache
    from runner.warm import served

    if max_size is None and older_than is None:
        raise click.UsageError("give --max-size SIZE and/or --older-than DURATION")
    result = collect(
        open_cache(settings_of(ctx)),
        max_size=max_size,
        older_than=older_than,
        before_removing=lambda key: served.drop([key]),  # its standbys end first, never after
    )
    text = (
        f"removed {len(result.removed)} environment(s) and the downloads of "
        f"{len(result.downloads_cleaned) + len(result.conda_cleaned)} package(s) no env "
        "holds; freed "
        f"{format_size(result.freed_bytes)}; {len(result.in_use)} in use kept; the cache "
        f"takes {format_size(result.kept_bytes)}"
    )
    emit(vars(result), as_json, text)


@envs.command("create")
@package_options
@lockfile_options
@json_option
@click.pass_context
def envs_create(
    ctx: click.Context,
    with_: tuple[str, ...],
    req_files: tuple[str, ...],
    index_url: str | None,
    extra_index_url: tuple[str, ...],
    find_links: tuple[str, ...],
    lockfile: str | None,
    environment: str | None,
    as_json: bool,
) -> None:
    """Build (or find) the environment for a package set, or of a lockfile, ahead of any
    job."""
    from runner.cli.progress import resolving
    from runner.spec import env_spec, open_cache

    settings = settings_of(ctx)
    reqs = packages_of(with_, req_files)
    index = index_of(index_url, extra_index_url, find_links)
    locked = lockfile_of(settings, lockfile, environment)
    if locked is not None:
        if reqs:
            raise click.UsageError("give packages or a lockfile, not both")
        env = locked_env(settings, locked.lock, index)
    else:
        with resolving(reqs):
            env = open_cache(settings, writing=True).ensure(env_spec(settings, reqs, index))
    emit(_env_row(env), as_json, f"{env.key[:12]}  {env.path}")


@envs.command("export")
@click.argument("key")
@output_option
@format_option
@click.pass_context
def envs_export(ctx: click.Context, key: str, output: str | None, fmt: str | None) -> None:
    """Write the lock of the cached environment KEY (a prefix will do)."""
    from runner.spec import open_cache

    write_lock(ctx, open_cache(settings_of(ctx)).get(key).lock, output, fmt)
