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
