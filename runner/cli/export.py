"""`runner export trainjob`: a job as a Kubeflow TrainJob for the cluster, pinned by its lock."""

from __future__ import annotations

import click

from runner.cli.common import settings_of, write_output


@click.group("export")
def export() -> None:
    """Write a job for somewhere else: the cluster."""


@export.command("trainjob")
@click.argument("name")
@click.option("-o", "--output", metavar="FILE", help="Write here (default: stdout).")
@click.option(
    "--runtime",
    help="The cluster's training runtime (default: the job's, else torch-distributed).",
)
@click.option(
    "--folder",
    is_flag=True,
    help="Take the script's whole folder along (packed into the command; up to 768 KiB).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Export even when the torch that ran here is not the one the runtime's image holds.",
)
@click.option(
    "--embed-secrets",
    is_flag=True,
    help="Write the values of variables that look like credentials (TOKEN, *_KEY, hf_..., "
    "...) into the manifest; by default they are read from a Secret.",
)
@click.option(
    "--resolve",
    is_flag=True,
    help="Where the env the job ran in was removed: resolve its packages again (the pins may "
    "differ from what ran).",
)
@click.pass_context
def trainjob(
    ctx: click.Context,
    name: str,
    output: str | None,
    runtime: str | None,
    folder: bool,
    force: bool,
    embed_secrets: bool,
    resolve: bool,
) -> None:
    """Write job NAME as a TrainJob (trainer.kubeflow.org/v1alpha1) that installs exactly
    the lock it ran in and runs the same entry: `kubectl apply -f` it.

    \b
    runner export trainjob my-job -o trainjob.yaml
    kubectl apply -f trainjob.yaml
    """
    try:
        from runner.backend import runtime_torch
    except ImportError:
        raise click.ClickException(
            "exporting a TrainJob needs the kubeflow SDK's models: "
            "pip install 'sandbox-runner[kubeflow]'"
        ) from None
    from runner.export import DEFAULT_RUNTIME, as_yaml
    from runner.export import trainjob as make
    from runner.store import JobStore

    settings = settings_of(ctx)
    record = JobStore(settings.state_dir).load(name)
    chosen = runtime or record.spec.runtime or DEFAULT_RUNTIME
    torch = runtime_torch(chosen)
    doc, notes = make(
        settings,
        record,
        runtime=chosen,
        runtime_torch=torch,
        force=force,
        folder=folder,
        embed_secrets=embed_secrets,
        resolve=resolve,
    )
    for note in notes:
        click.echo(f"note: {note}", err=True)
    text = as_yaml(doc)
    if output is None or output == "-":
        click.echo(text, nl=False)
    else:
        write_output(output, text)
        click.echo(f"wrote {output} (TrainJob {doc['metadata']['name']})", err=True)
