"""Entry script from a function, and the argv of each step (python or torchrun).

A function job becomes a file that holds the function's source and calls it
as `func(**args)`, the arguments read from JSON: the same function runs here
and on a Kubeflow cluster.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from runner.spec import FunctionEntry, JobSpec, ScriptEntry

ENTRY_FILE = "entry.py"
ARGS_FILE = "args.json"

_CALL = """

if __name__ == "__main__":
    import json as _json
    import sys as _sys

    with open(_sys.argv[1], encoding="utf-8") as _fh:
        _kwargs = _json.load(_fh)
    {function}(**_kwargs)
"""


@dataclass(frozen=True)
class Step:
    """One process tree of a job: `node-0`, `node-1`, ..."""

    name: str
    node_rank: int
    argv: tuple[str, ...]


def write_entry(entry: FunctionEntry, jobdir: Path) -> list[str]:
    """Write the entry script and its arguments; returns the script's argv."""
    (jobdir / ENTRY_FILE).write_text(entry.source + _CALL.format(function=entry.function))
    (jobdir / ARGS_FILE).write_text(json.dumps(entry.args))
    return [str(jobdir / ENTRY_FILE), str(jobdir / ARGS_FILE)]


def program(spec: JobSpec, jobdir: Path) -> list[str]:
    """What python (or each torchrun worker) runs: a script, `-m module`, or the entry file."""
    entry = spec.entry
    if isinstance(entry, FunctionEntry):
        return write_entry(entry, jobdir)
    assert isinstance(entry, ScriptEntry)
    if entry.kind == "module":
        return ["-m", entry.target, *entry.argv]
    return [str(Path(entry.target).resolve()), *entry.argv]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def steps(spec: JobSpec, bin_dir: Path, jobdir: Path) -> list[Step]:
    """The argv of every step. Torch jobs get one torchrun agent per local node.

    The rendezvous is torchrun's static one on loopback (`--master-addr`), as a
    Kubeflow cluster launches it: it honours `--node-rank`, so node `i` holds
    global ranks `i * nproc_per_node + local_rank`. (The c10d rendezvous ignores
    `--node-rank` and assigns nodes in join order, so ranks could not be told.)
    """
    prog = program(spec, jobdir)
    if spec.framework != "torch":
        return [Step("node-0", 0, (str(bin_dir / "python"), *prog))]
    port = free_port()
    return [
        Step(
            f"node-{rank}",
            rank,
            (
                str(bin_dir / "torchrun"),
                f"--nnodes={spec.num_nodes}",
                f"--nproc-per-node={spec.nproc_per_node}",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "--tee=3",
                *prog,
            ),
        )
        for rank in range(spec.num_nodes)
    ]
