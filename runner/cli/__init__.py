"""The `runner` command. Thin: each command gathers data and prints it as text or JSON.

Only click is imported at start-up; each command imports what it needs, so
`runner --help` stays fast.
"""

from __future__ import annotations

import click

from runner.cli.common import Group
from runner.cli.config import config
from runner.cli.data import data
from runner.cli.envs import envs
from runner.cli.export import export
from runner.cli.gpus import gpus
from runner.cli.jobs import cancel, jobs, logs, rm, status, supervise, train
from runner.cli.locks import lock
from runner.cli.server import server

FORMATS = click.Choice(["text", "json"])


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=FORMATS,
    default=None,
    help="What the runner prints: text, lines for people (default), or json, one record per "
    "line (RUNNER_LOG_FORMAT).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    default=None,
    help="Every event of the runner, each field and its time (debug level).",
)
@click.version_option(package_name="sandbox-runner")
@click.pass_context
def cli(ctx: click.Context, log_format: str | None, verbose: bool | None) -> None:
    """Run Python training jobs in cached, sandboxed environments."""
    from pydantic import ValidationError

    from runner.settings import RunnerSettings, problems

    try:
        ctx.obj = RunnerSettings()
    except ValidationError as exc:
        raise click.ClickException(problems(exc)) from None
    _output(ctx, log_format, verbose)


def _output(ctx: click.Context, log_format: str | None, verbose: bool | None) -> None:
    """Apply `--log-format` and `-v`, given before or after the subcommand."""
    from runner.logs import configure

    root = ctx.find_root()
    if log_format:
        root.obj = root.obj.model_copy(update={"log_format": log_format})
    if verbose:
        root.obj = root.obj.model_copy(update={"log_level": "debug"})
        root.meta["verbose"] = True
    configure(root.obj.log_format, root.obj.log_level, verbose=bool(root.meta.get("verbose")))


for command in (
    train,
    jobs,
    status,
    logs,
    cancel,
    rm,
    supervise,
    envs,
    data,
    gpus,
    lock,
    config,
    export,
    server,
):
    cli.add_command(command)


def _late_log_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        _output(ctx, value, None)


def _late_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _output(ctx, None, True)


def _leaves(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found += _leaves(command) if isinstance(command, click.Group) else [command]
    return found


for leaf in _leaves(cli):  # global options, accepted before or after the subcommand
    if leaf.hidden:
        continue
    click.option(
        "--log-format",
        type=FORMATS,
        expose_value=False,
        callback=_late_log_format,
        help="text (default) or json (as before the subcommand).",
    )(leaf)
    click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        callback=_late_verbose,
        help="Every event, each field and its time.",
    )(leaf)


def main() -> None:
    cli(prog_name="runner")
