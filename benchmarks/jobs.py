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
