"""`python -m benchmarks.agent`: does torchrun's agent stay for a job of several ranks?

One node, N ranks of gloo, in the env of `torch==2.13.0` and numpy (the cache's, built if
missing), no sandbox: the launch alone, side by side, alternating, in one run.

- `torchrun`: `python -m torch.distributed.run --standalone --nproc-per-node N`, the
  agent starting the workers (what `runner train --nproc-per-node N` runs today);
- `direct`: this process starts the N workers itself, each with what torchrun's agent
  gives a worker (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...; rank 0 hosts the
  store), as the runner's one-rank jobs already start (`launch.rank_environ`).

Each worker prints a line as its first statement, then again once its process group is
up (`init_process_group`), then ends it. Reported per launch: the time from the start to
every rank's first line, to every rank's group, and to the launch's exit, in seconds
(medians). With standbys, a worker's start to its first line is the part a standby takes
away; the agent's own start is not.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = """\
import os, time
os.write(1, f"first {os.environ['RANK']} {time.time()}\\n".encode())  # one write: whole
import torch.distributed as dist
dist.init_process_group("gloo")
os.write(1, f"group {os.environ['RANK']} {time.time()}\\n".encode())
dist.destroy_process_group()
"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _times(out: str, start: float, ranks: int) -> tuple[float, float]:
    firsts = [float(x.split()[-1]) for x in out.splitlines() if "first " in x]
    groups = [float(x.split()[-1]) for x in out.splitlines() if "group " in x]
    if len(firsts) != ranks or len(groups) != ranks:
        raise RuntimeError(f"not every rank said its lines:\n{out}")
    return max(firsts) - start, max(groups) - start


def torchrun(python: str, script: Path, ranks: int) -> tuple[float, float, float]:
    start = time.time()
    argv = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    done = subprocess.run([*argv, str(script)], capture_output=True, text=True, check=True)
    end = time.time() - start
    return (*_times(done.stdout, start, ranks), end)


def direct(python: str, script: Path, ranks: int) -> tuple[float, float, float]:
    port = _port()
    start = time.time()
    procs = []
    for rank in range(ranks):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "GROUP_RANK": "0",
            "LOCAL_WORLD_SIZE": str(ranks),
            "WORLD_SIZE": str(ranks),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "TORCHELASTIC_USE_AGENT_STORE": "False",
        }
        procs.append(
            subprocess.Popen([python, str(script)], env=env, stdout=subprocess.PIPE, text=True)
        )
    out = "".join(p.communicate()[0] for p in procs)
    end = time.time() - start
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a rank failed:\n{out}")
    return (*_times(out, start, ranks), end)


def measure(python: str, ranks: int, reps: int) -> dict[str, dict[str, float]]:
    """Each launch's medians (and min, max) to first lines, groups up and exit, in seconds,
    alternating after one unmeasured run of each; and direct's ratio to torchrun's."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "worker.py"
        script.write_text(WORKER)
        launches = {"torchrun": torchrun, "direct": direct}
        for launch in launches.values():  # once each, unmeasured: the page cache
            launch(python, script, ranks)
        seen: dict[str, list[tuple[float, float, float]]] = {k: [] for k in launches}
        for _ in range(reps):
            for name, launch in launches.items():
                seen[name].append(launch(python, script, ranks))
    out: dict[str, dict[str, float]] = {}
    for name, runs in seen.items():
        for i, moment in enumerate(MOMENTS):
            values = [r[i] for r in runs]
            out[f"{name}_{moment}"] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    out["ratio"] = {
        m: out[f"direct_{m}"]["median"] / out[f"torchrun_{m}"]["median"] for m in MOMENTS
    }
    return out


MOMENTS = ("first_lines", "groups_up", "exit")


def _torch_python() -> str:
    from envs.requirements import parse_all
    from runner.settings import RunnerSettings
    from runner.spec import env_spec, open_cache

    settings = RunnerSettings()
    env = open_cache(settings).ensure(env_spec(settings, parse_all(["torch==2.13.0", "numpy"])))
    return str(env.python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--python", help="an env's python with torch (default: the cache's)")
    args = parser.parse_args()
    found = measure(args.python or _torch_python(), args.ranks, args.reps)
    print(f"{args.ranks} ranks, gloo, {args.reps} runs each, alternating; medians in seconds")
    print(f"{'launch':<10} {'first lines':>12} {'groups up':>10} {'exit':>8}")
    for name in ("torchrun", "direct"):
        row = [found[f"{name}_{m}"]["median"] for m in MOMENTS]
        print(f"{name:<10} {row[0]:>12.3f} {row[1]:>10.3f} {row[2]:>8.3f}")
    ratio = [found["ratio"][m] for m in MOMENTS]
    print(f"{'direct/tr':<10} {ratio[0]:>12.2f} {ratio[1]:>10.2f} {ratio[2]:>8.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
