"""How often a DDP function job that trained still ends Failed: gloo aborting in the
interpreter's teardown, after the function returned. The runner's entry ends the process
once the function returns (`runner/launch.py`); the entry as it was before (the function
called, then the interpreter's own exit) runs beside it, alternating, in the same run.

    python -m benchmarks.exit_rate --runs 36      # about 9 minutes on 2 cores

Prints one line per variant: Failed runs of all, and the reasons; exits 0.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
from pathlib import Path


def ddp_function(steps: int) -> None:
    """Train a small DDP model on gloo, then end the group, as the README tells one to."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    model = DistributedDataParallel(nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(32, 16)).pow(2).mean().backward()
        optimizer.step()
    print(f"rank {dist.get_rank()} trained", flush=True)
    dist.destroy_process_group()


OLD_CALL = """

if __name__ == "__main__":
    import json as _json
    import sys as _sys

    with open(_sys.argv[1], encoding="utf-8") as _fh:
        _kwargs = _json.load(_fh)
    {function}(**_kwargs)
"""
"""The entry before it ended the process itself: the interpreter's teardown followed."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=36, help="jobs per variant")
    args = parser.parse_args()

    from kubeflow.trainer import CustomTrainer

    from runner import launch
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    new_call = launch._CALL
    outcomes: dict[str, collections.Counter[str]] = {"entry now": collections.Counter()}
    outcomes["entry before"] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="runner-exit-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        cfg = LocalProcessBackendConfig(
            cache_dir=root / "cache",
            state_dir=root / "state",
            find_links=os.environ.get("PIP_FIND_LINKS", "").split(),
            cleanup_venv=True,
        )
        backend = LocalProcessBackend(cfg)
        trainer = CustomTrainer(
            func=ddp_function,
            func_args={"steps": 20},
            packages_to_install=[],
            num_nodes=1,
            resources_per_node={"cpu": 2},
        )
        for run in range(args.runs):
            for variant, seen in outcomes.items():
                launch._CALL = new_call if variant == "entry now" else OLD_CALL
                job = backend.train(runtime="torch-distributed", trainer=trainer)
                done = backend.wait_for_job_status(
                    job, status={"Complete", "Failed"}, polling_interval=0.2, timeout=600
                )
                record = backend.store.load(job)
                seen[done.status if done.status == "Complete" else str(record.reason)] += 1
                if done.status != "Complete":  # what the job said last: why it failed
                    keys = ("terminate", "Signal", "exitcode", "Error")
                    said = [
                        line for line in backend.get_job_logs(job) if any(k in line for k in keys)
                    ]
                    print(f"  {variant}, {job}: {said[:3]}", flush=True)
                backend.delete_job(job)
            print(f"run {run + 1}/{args.runs}: {dict(outcomes)}", flush=True)
    for variant, seen in outcomes.items():
        failed = sum(n for reason, n in seen.items() if reason != "Complete")
        print(f"{variant}: {failed} of {args.runs} Failed {dict(seen)}")


if __name__ == "__main__":
    main()
