"""A real DistributedDataParallel training: a small regression model.

Run under torchrun with several ranks; each rank prints its loss per epoch. On the CPU the
ranks talk over gloo; a job given GPUs (`--gpus N`: one rank per GPU) trains on its
LOCAL_RANK's GPU over NCCL.

    runner train --with torch==2.13.0 --nproc-per-node 2 examples/train_ddp.py --epochs 5
    runner train --gpus 1 --base-python /usr/bin/python3 examples/train_ddp.py
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=2048)
    args = parser.parse_args()

    # Also as a plain script (one process, no torchrun): a world of one.
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(name, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)

    # y = 3x0 - 2x1 + 0.5 + noise: every rank builds the same data, the sampler shards it
    x = torch.randn(args.samples, 2)
    y = (x @ torch.tensor([3.0, -2.0]) + 0.5 + 0.01 * torch.randn(args.samples)).unsqueeze(1)
    dataset = TensorDataset(x.to(device), y.to(device))
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)

    model = DistributedDataParallel(nn.Linear(2, 1).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.MSELoss()

    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total, batches = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()  # gradients are all-reduced across ranks here
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        print(f"epoch {epoch} rank {rank}/{world} loss {total / batches:.4f}", flush=True)

    if rank == 0:
        weight = model.module.weight.detach().squeeze().tolist()
        print(f"done: weight {weight[0]:.2f} {weight[1]:.2f} bias {model.module.bias.item():.2f}")
        print(f"local rank {os.environ.get('LOCAL_RANK')} of node {os.environ.get('GROUP_RANK')}")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"trained on {device} ({name})")
    # End cleanly: free DDP (its reducer holds the process group), let every rank get here,
    # then destroy the group. With destroy alone, gloo aborted at exit in 3 of 12 runs here
    # ("terminate called without an active exception"); with this, 1 of 36 (README).
    del model, optimizer, loader, sampler
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
