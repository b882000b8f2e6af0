"""Entry script from a function, and the argv of each step (python or torchrun).

A function job becomes a file that holds the function's source and calls it
as `func(**args)`, the arguments read from JSON: the same function runs here
and on a Kubeflow cluster.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from runner.spec import FunctionEntry, JobSpec, ScriptEntry

ENTRY_FILE = "entry.py"
ARGS_FILE = "args.json"
RANKS_FILE = "ranks.py"
"""The program that starts a node's ranks without torchrun's agent (`runner/ranks.py`)."""

_CALL = """

if __name__ == "__main__":
    import atexit as _atexit
    import json as _json
    import os as _os
    import sys as _sys

    with open(_sys.argv[1], encoding="utf-8") as _fh:
        _kwargs = _json.load(_fh)
    try:
        {function}(**_kwargs)
        _code = 0
    except SystemExit as _exit:
        _code = _exit.code
    except KeyboardInterrupt:
        import traceback as _traceback

        _traceback.print_exc()
        _code = 130
    except BaseException:
        import traceback as _traceback

        _traceback.print_exc()
        _code = 1
    # The function has returned: end now, as the interpreter would up to its teardown (its
    # threads joined, exit handlers run, output flushed), then os._exit. The teardown itself
    # (modules and C++ objects freed: gloo's threads) can only fail a job that is done.
    if _code is None:
        _code = 0
    elif not isinstance(_code, int):
        print(_code, file=_sys.stderr)
        _code = 1
    if "threading" in _sys.modules:
        _sys.modules["threading"]._shutdown()
    _atexit._run_exitfuncs()
    for _stream in (_sys.stdout, _sys.stderr):
        try:
            _stream.flush()
        except (OSError, ValueError):
            pass
    _os._exit(_code & 0xFF)
"""
"""Calls the function as the cluster does, `func(**args)`; see `write_entry`."""


@dataclass(frozen=True)
class Step:
    """One process tree of a job: `node-0`, `node-1`, ..."""

    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    """Variables of this step alone (a direct rank's torchrun variables)."""


def _readable(path: Path, text: str) -> None:
    """Write a file the job's processes read, whatever the umask: root's jobs run as another
    user. The job's folder (0700, that user's) keeps everyone else out."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)


def write_entry(entry: FunctionEntry, jobdir: Path) -> list[str]:
    """Write the entry script and its arguments; returns the script's argv."""
    _readable(jobdir / ENTRY_FILE, entry.source + _CALL.format(function=entry.function))
    _readable(jobdir / ARGS_FILE, json.dumps(entry.args))
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


def job_loopback() -> str:
    """A loopback network of the job's own: `127.A.B.` (A, B random, A > 0), hosts 1.. its nodes.

    All of 127/8 is loopback. Jobs that meet on different addresses cannot take
    each other's rendezvous port, whatever port each one picks: starting
    together, two jobs would otherwise both see a port free and both bind it.
    """
    a, b = secrets.randbelow(254) + 1, secrets.randbelow(256)
    return f"127.{a}.{b}."


def free_port(host: str) -> int:
    """A port free on `host` now; nobody else binds `host`, so it stays free for the job."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


STORE_HOST = (
    "import os, sys\n"
    "from torch.distributed.run import main\n"
    "fd = int(sys.argv.pop(1))\n"
    "sys.argv[0] = 'torchrun'\n"
    "code = main()  # a failure (or TERM) raises: then this node ends at once, as torchrun does\n"
    "os.read(fd, 1)  # EOF: every other node has ended\n"
    "sys.exit(code)\n"
)
"""node-0's torchrun, which hosts the rendezvous store, kept alive until the other agents end.

torchrun's agents meet once more as they exit; the host's store closes when its
process ends, and an agent still reading from it then fails ("recvValueWithTimeout
failed"). The runner holds the other end of the pipe `fd` and closes it when every
other node has exited (or it ends the job); if the runner dies, it closes too."""

RANK_PREFIX = "[rank${rank}]:"
"""torchrun's prefix for each worker line (`--tee`): the global rank, whatever the node."""

_PREFIXED = re.compile(r"^\[rank(\d+)\]:(.*)$", re.DOTALL)


def torch_environ() -> dict[str, str]:
    """What torchrun needs in its environment to tag worker lines with their global rank."""
    return {"TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": RANK_PREFIX}


def split_rank(line: str) -> tuple[int | None, str]:
    """(global rank, the worker's own line) from a torchrun line; (None, line) for its own."""
    match = _PREFIXED.match(line)
    return (int(match[1]), match[2]) if match else (None, line)


def direct(spec: JobSpec) -> bool:
    """Whether the job's ranks start without torchrun's agent (`JobSpec.launcher`): one node."""
    return spec.framework == "torch" and spec.launcher == "direct" and spec.num_nodes == 1


def rank_environ(spec: JobSpec, master: str, port: int) -> dict[str, str]:
    """What torchrun's agent gives every worker of a one-node job (rank 0's ranks; the others'
    `RANK`, `LOCAL_RANK` and `ROLE_RANK` are set as `ranks.py` starts them)."""
    ranks = str(spec.nproc_per_node)
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "GROUP_RANK": "0",
        "ROLE_RANK": "0",
        "ROLE_NAME": "default",
        "LOCAL_WORLD_SIZE": ranks,
        "WORLD_SIZE": ranks,
        "GROUP_WORLD_SIZE": "1",
        "ROLE_WORLD_SIZE": ranks,
        "MASTER_ADDR": master,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": spec.name,
        "TORCHELASTIC_USE_AGENT_STORE": "False",  # rank 0 hosts the store itself
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }


def node_argv(
    bin_dir: Path, jobdir: Path, spec: JobSpec, grace: float, *mode: str
) -> tuple[str, ...]:
    """The argv of `ranks.py` for the job's node (copied into its folder): `cold -- ARGV` or a
    standby's `warm ...` (see `runner/ranks.py`)."""
    ranks = jobdir / RANKS_FILE
    _readable(ranks, Path(__file__).with_name(RANKS_FILE).read_text(encoding="utf-8"))
    python = str(bin_dir / "python")
    return (python, "-I", "-S", str(ranks), str(grace), str(spec.nproc_per_node), *mode)


def steps(
    spec: JobSpec, bin_dir: Path, jobdir: Path, hold_fd: int | None = None, grace: float = 5.0
) -> list[Step]:
    """The argv of every step. Torch jobs of one node start their ranks directly (`direct`:
    one rank as python itself, several under `ranks.py`, which ends the others `grace`
    seconds after one failed); else they get one torchrun agent per local node.

    The agents meet in a c10d rendezvous on a loopback address of the job's
    own (`job_loopback`), hosted by `node-0`. c10d hands out node ranks in join
    order and ignores `--node-rank` (torchrun warns if it is given), so it is
    not passed; each worker line is
    tagged with its true global rank through torchrun's prefix template instead.
    Each agent gives its own address in that network (127.A.B.N+1): c10d tells
    nodes apart by address and pid, and each node runs in a pid namespace of
    its own, where every agent may have the same pid. With several nodes,
    node-0 runs under `STORE_HOST`, held open by `hold_fd`.
    """
    prog = program(spec, jobdir)
    if spec.framework != "torch":
        return [Step("node-0", (str(bin_dir / "python"), *prog))]
    if direct(spec):
        net = job_loopback()
        env = tuple(rank_environ(spec, f"{net}1", free_port(f"{net}1")).items())
        rank = (str(bin_dir / "python"), *prog)
        if spec.nproc_per_node == 1:
            return [Step("node-0", rank, env)]
        return [Step("node-0", node_argv(bin_dir, jobdir, spec, grace, "cold", "--", *rank), env)]
    torchrun: tuple[str, ...] = (str(bin_dir / "torchrun"),)
    if bin_dir.is_dir() and not (bin_dir / "torchrun").exists():  # torch is in a layer's base
        torchrun = (str(bin_dir / "python"), "-m", "torch.distributed.run")
    net = job_loopback()
    endpoint = f"{net}1:{free_port(f'{net}1')}"
    host = (str(bin_dir / "python"), "-c", STORE_HOST, str(hold_fd))
    return [
        Step(
            f"node-{node}",
            (
                *(host if node == 0 and hold_fd is not None else torchrun),
                f"--nnodes={spec.num_nodes}",
                f"--nproc-per-node={spec.nproc_per_node}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}",
                f"--rdzv-id={spec.name}",
                f"--rdzv-conf=is_host={int(node == 0)}",
                f"--local-addr={net}{node + 1}",
                "--tee=3",
                *prog,
            ),
        )
        for node in range(spec.num_nodes)
    ]
