"""The Kubeflow Trainer SDK on the local cached backend: train twice, the second warm.

.venv/bin/pip install -e '.[kubeflow]' && .venv/bin/python examples/sdk_train.py
"""

from __future__ import annotations

import time

from kubeflow.trainer import CustomTrainer

from runner.backend import trainer_client


def train_linear(lr: float, epochs: int) -> None:
    """A DDP training function, written once for a local run and a Kubeflow cluster alike."""
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    x = torch.randn(512, 2)
    y = (x @ torch.tensor([3.0, -2.0]) + 0.5).unsqueeze(1)
    model = DistributedDataParallel(nn.Linear(2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        print(f"epoch {epoch} rank {rank} loss {loss.item():.4f}")
    del model, optimizer  # DDP's reducer holds the group: free it, then end the group
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    client = trainer_client()
    for attempt in ("first", "second"):
        started = time.monotonic()
        job = client.train(
            runtime=client.get_runtime("torch-distributed"),
            trainer=CustomTrainer(
                func=train_linear,
                func_args={"lr": 0.1, "epochs": 30},
                packages_to_install=["torch==2.13.0", "numpy"],
                resources_per_node={"cpu": 2},
            ),
        )
        done = client.wait_for_job_status(job, polling_interval=0.1, timeout=900)
        print(f"{attempt} job {job}: {done.status} in {time.monotonic() - started:.1f} s")
        events = {e.reason: e.message for e in client.get_job_events(job)}
        print("  env:", "hit" if "env.hit" in events else "built", "|", events.get("env.hit", ""))
        for line in list(client.get_job_logs(job))[-2:]:
            print("  ", line)


if __name__ == "__main__":
    main()
