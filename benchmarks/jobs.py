"""Training functions the benchmark sends through the SDK backend (by their source)."""

from __future__ import annotations


def trivial() -> None:
    print("ok")


def all_reduce() -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend="gloo")
    total = torch.tensor([dist.get_rank()])
    dist.all_reduce(total)
    print(f"sum {total.item()}")
    dist.destroy_process_group()


def get_torch_dist(learning_rate: str = "0.01", num_epochs: str = "5") -> None:
    """The Kubeflow SDK README's first example, with the group destroyed at the end (without
    it, gloo aborts at exit now and then: README, "Jobs"), and its `func_args` as defaults:
    the original local backend passes them as one positional dict, the cluster as keywords
    (NOTES), so the example as written fails there. Both backends run this one."""
    import os

    import torch  # noqa: F401 - as in the SDK's README
    import torch.distributed as dist

    dist.init_process_group(backend="gloo")
    print("PyTorch Distributed Environment")
    print(f"WORLD_SIZE: {dist.get_world_size()}")
    print(f"RANK: {dist.get_rank()}")
    print(f"LOCAL_RANK: {os.environ['LOCAL_RANK']}")

    lr = float(learning_rate)
    epochs = int(num_epochs)
    loss = 1.0 - (lr * 2) - (epochs * 0.01)

    if dist.get_rank() == 0:
        print(f"loss={loss}")
    dist.destroy_process_group()


def train_model() -> None:
    """The Kubeflow Trainer SDK LocalProcessBackend README's "Training Job Example"
    (`../shared/workloads/sdk_readme_example.py`): the warm-start figures' workload."""
    import torch

    print("Starting PyTorch training...")
    model = torch.nn.Linear(10, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(5):
        loss = torch.nn.functional.mse_loss(model(torch.randn(32, 10)), torch.randn(32, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"Epoch {epoch}: Loss = {loss.item():.4f}")


def busy() -> None:
    """Two seconds or so of one core's work after torch's import, timed by the job itself:
    what a standby warming beside a job may slow down."""
    import time

    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    a = torch.randn(256, 256)
    for _ in range(9000):
        a = torch.tanh(a @ a.T / 256)
    print(f"busy {time.perf_counter() - started:.4f}")
