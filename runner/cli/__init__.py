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


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default=None,
    help="How the runner's events are written (default: console on a TTY, else JSON lines).",
)
@click.version_option(package_name="sandbox-runner")
@click.pass_context
def cli(ctx: click.Context, log_format: str | None) -> None:
    """Run Python training jobs in cached, sandboxed environments."""
    from pydantic import ValidationError

    from runner.logs import configure
    from runner.settings import RunnerSettings, problems

    try:
        settings = RunnerSettings()
    except ValidationError as exc:
        raise click.ClickException(problems(exc)) from None
    if log_format:
        settings = settings.model_copy(update={"log_format": log_format})
    configure(settings.log_format, settings.log_level)
    ctx.obj = settings


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
):
    cli.add_command(command)


def _late_log_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--log-format` after the subcommand: the same as before it."""
    if value:
        from runner.logs import configure

        root = ctx.find_root()
        root.obj = root.obj.model_copy(update={"log_format": value})
        configure(root.obj.log_format, root.obj.log_level)


def _leaves(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found += _leaves(command) if isinstance(command, click.Group) else [command]
    return found


for leaf in _leaves(cli):  # a global option, accepted before or after the subcommand
    if not any(p.name == "log_format" for p in leaf.params) and not leaf.hidden:
        click.option(
            "--log-format",
            type=click.Choice(["auto", "json", "console"]),
            expose_value=False,
            callback=_late_log_format,
            help="How the runner's events are written (as before the subcommand).",
        )(leaf)


def main() -> None:
    cli(prog_name="runner")
