"""What every `runner` command shares: error handling, settings, output as text or JSON."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from collections.abc import Callable

    from packaging.requirements import Requirement

    from envs import Env, IndexConfig
    from envs.lockfile import Lock
    from envs.script import ScriptMetadata
    from runner.settings import RunnerSettings
    from runner.spec import LockedSet


class Group(click.Group):
    """User mistakes print one line without a traceback; bugs keep theirs. Every error reads
    `error: ...`, as uv's and cargo's do, click's own (a usage error) included."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command with the first sentence of its help, whole (click cuts it at 45)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=300)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False  # errors are shown here, with one prefix
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            if exc.ctx is not None:
                click.echo(exc.ctx.get_usage(), err=True)
                click.echo(f"Try '{exc.ctx.command_path} --help' for help.\n", err=True)
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # an int: ctx.exit(code)

    def invoke(self, ctx: click.Context) -> Any:
        from envs import EnvError
        from runner.errors import RunnerError

        try:
            return super().invoke(ctx)
        except (RunnerError, EnvError) as exc:
            raise click.ClickException(str(exc)) from None


def grouped(sections: dict[str, tuple[str, ...]]) -> type[click.Command]:
    """A command class whose --help lists its options under titles, as uv's does: `sections`
    maps a title to its options' parameter names; the rest come last, as "Other options"."""

    class Grouped(click.Command):
        def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            params = self.get_params(ctx)
            placed = {name for names in sections.values() for name in names}
            for title, names in [*sections.items(), ("Other options", ())]:
                chosen = [
                    p
                    for p in params
                    if isinstance(p, click.Option)  # the arguments are in the usage line
                    and (p.name in names or (not names and p.name not in placed))
                ]
                rows = [row for p in chosen if (row := p.get_help_record(ctx)) is not None]
                if rows:
                    with formatter.section(title):
                        formatter.write_dl(rows)

    return Grouped


def settings_of(ctx: click.Context) -> RunnerSettings:
    settings: RunnerSettings = ctx.find_root().obj
    return settings


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def size_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    from runner.units import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def duration_option(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> timedelta | None:
    from runner.units import parse_duration

    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def write_output(output: str, text: str) -> None:
    """Write `text` to the file `-o` named, whole or not at all; a problem is one line."""
    from envs.files import atomic_write_text

    path = Path(output)
    if path.is_dir():
        raise click.BadParameter(f"{output!r} is a folder: name a file", param_hint="--output")
    if not path.parent.is_dir():
        raise click.BadParameter(
            f"folder {str(path.parent)!r} does not exist", param_hint="--output"
        )
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None


def package_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--with REQ` and `-r FILE` (the package set), and where the packages come from."""
    command = click.option(
        "--find-links", multiple=True, help="Folder or page of wheels (repeatable)."
    )(command)
    command = click.option(
        "--extra-index-url", multiple=True, help="Extra package index (repeatable)."
    )(command)
    command = click.option(
        "--index-url", help="Package index (default: settings, PIP_INDEX_URL, PyPI)."
    )(command)
    command = click.option(
        "-r",
        "--requirements",
        "req_files",
        multiple=True,
        type=click.Path(),
        help="Requirements file (repeatable).",
    )(command)
    return click.option(
        "--with", "with_", multiple=True, metavar="REQ", help="A requirement (repeatable)."
    )(command)


def lockfile_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--lockfile FILE` (exactly that set) and `--environment NAME` (of a pixi or conda lock)."""
    command = click.option(
        "--environment",
        metavar="NAME",
        help="The lockfile's environment: a pixi.lock environment (default: default) or a "
        "conda-lock category (default: main).",
    )(command)
    return click.option(
        "--lockfile",
        type=click.Path(),
        help="Exactly this lock (pylock.toml, pixi.lock, conda-lock.yml, hashed requirements).",
    )(command)


def packages_of(with_: tuple[str, ...], req_files: tuple[str, ...]) -> list[Requirement]:
    """The requirements given by `package_options`, parsed: `--with` first, then each file."""
    from envs.requirements import parse_all, read_file

    return [*parse_all(with_), *(r for f in req_files for r in read_file(f))]


def script_metadata(script: str | None) -> ScriptMetadata | None:
    """The script's `# /// script` block (PEP 723), if it has one."""
    from envs.script import ScriptMetadata

    return ScriptMetadata.read(script) if script is not None else None


def check_script(
    settings: RunnerSettings, meta: ScriptMetadata, locked: LockedSet | None, python: str | None
) -> None:
    """Refuse a job that cannot give the script what its block declares: a lockfile without
    a declared dependency, an interpreter (the lock's python, for a conda lock) outside its
    `requires-python`."""
    from envs import Interpreter

    if locked is not None:
        packages = locked.lock.packages
        meta.check_locked(((p.name, p.version) for p in packages), locked.source)
        pythons = [p.version for p in packages if p.name == "python" and p.manager == "conda"]
        if pythons:
            meta.check_python(pythons[0], f"(the python of {locked.source})")
            return
    interpreter = Interpreter.at(python or settings.python)
    meta.check_python(interpreter.version, interpreter.executable)


def index_of(
    index_url: str | None, extra_index_url: tuple[str, ...], find_links: tuple[str, ...]
) -> IndexConfig:
    """The index options of `package_options`: the job's layer, over settings and PIP_*."""
    from envs import IndexConfig

    return IndexConfig(
        index_url=index_url, extra_index_urls=extra_index_url, find_links=find_links
    ).labelled(
        {
            "index_url": "--index-url",
            "extra_index_urls": "--extra-index-url",
            "find_links": "--find-links",
        }
    )


def base_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--base KEY|LOCKFILE` and `--base-python PATH`: what the env is a layer over."""
    command = click.option(
        "--base-python",
        type=click.Path(dir_okay=False),
        help="Layer the env over this interpreter's installed packages (CUDA torch, say).",
    )(command)
    return click.option(
        "--base",
        metavar="KEY|LOCKFILE",
        help="Layer the env over a cached env: its key (`runner envs list`; a prefix will do), "
        "or a lockfile, whose env is built once and cached.",
    )(command)


def base_python_of(settings: RunnerSettings, base: str | None, given: str | None) -> str | None:
    """The base's interpreter: a cached env's (`--base KEY`, or the env of `--base LOCKFILE`,
    built if it is not cached yet), or one given (`--base-python`, the setting; a name is
    looked up on PATH). A venv's python stays itself: no link is followed."""
    import shutil

    from runner.spec import open_cache

    if base and given:
        raise click.UsageError("give --base or --base-python, not both")
    if base and Path(base).is_file():
        return str(_locked_env(settings, Path(base)))
    if base:
        env = open_cache(settings).get(base)
        _not_conda(base, env.meta.conda is not None)
        return str(env.python)
    path = given or settings.base_python
    if path is None:
        return None
    absolute = Path(path).expanduser().absolute()
    if absolute.is_file():
        return str(absolute)
    found = shutil.which(str(path)) if "/" not in str(path) else None
    if found is None:
        raise click.BadParameter(
            f"{str(path)!r} is not a python executable", param_hint="--base-python"
        )
    return found


def _not_conda(base: str, conda: bool) -> None:
    """A layer sees its base's packages but not its prefix: conda packages that find their
    files under `sys.prefix` would break in it, so a conda env is no base."""
    if conda:
        raise click.BadParameter(
            f"{base} is a conda environment, which layers do not go over (its packages find "
            "their files under its own prefix): add the packages to the pixi or conda lock",
            param_hint="--base",
        )


def _locked_env(settings: RunnerSettings, lockfile: Path) -> Path:
    """The python of the cached env that holds exactly `lockfile` (built the first time)."""
    locked = lockfile_of(settings, str(lockfile), None)
    assert locked is not None
    _not_conda(str(lockfile), locked.kind == "conda")
    return locked_env(settings, locked.lock).python


def lockfile_of(
    settings: RunnerSettings, lockfile: str | None, environment: str | None
) -> LockedSet | None:
    """`--lockfile` (with `--environment`) read in any format and checked against the
    interpreter of new envs; None when none is given (`--environment` alone is refused)."""
    from runner.spec import LockedSet

    if lockfile is None:
        if environment:
            raise click.UsageError("--environment names an environment of --lockfile: give both")
        return None
    return LockedSet.read(lockfile, settings, environment)


def locked_env(settings: RunnerSettings, lock: Lock, index: IndexConfig | None = None) -> Env:
    """The cached env that holds exactly `lock`, built the first time."""
    from runner.spec import env_spec, open_cache

    spec = env_spec(settings, lock.pip_pins(), index)
    return open_cache(settings, writing=True).ensure(spec, lock=lock)
