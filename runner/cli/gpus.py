"""`runner gpus`: the GPUs jobs draw from, and which job holds each."""

from __future__ import annotations

from dataclasses import asdict

import click

from runner.cli.common import emit, json_option, settings_of
from runner.units import format_size


@click.command()
@json_option
@click.pass_context
def gpus(ctx: click.Context, as_json: bool) -> None:
    """List the GPU pool (RUNNER_GPUS within CUDA_VISIBLE_DEVICES) and each GPU's job."""
    from runner.leases import Leases

    settings = settings_of(ctx)
    pool = settings.gpu_pool()
    held = Leases(settings.leases_dir, {"gpu": [g.uuid for g in pool]}).holders("gpu")
    rows = [{**asdict(g), "node": g.node, "job": held[g.uuid]} for g in pool]
    lines = [f"{'INDEX':<6}{'NAME':<28}{'MEMORY':>10}  {'UUID':<42}JOB"]
    for g in pool:
        memory = format_size(g.memory_bytes) if g.memory_bytes else "-"
        lines.append(
            f"{g.index:<6}{g.name[:27]:<28}{memory:>10}  {g.uuid:<42}{held[g.uuid] or '-'}"
        )
    if not pool:
        lines = ["no GPUs in the pool (no NVIDIA driver, or RUNNER_GPUS / CUDA_VISIBLE_DEVICES)"]
    emit(rows, as_json, "\n".join(lines))
