"""A tiny gloo all-reduce; rank FAIL_RANK (if set) exits with code 3 instead."""

import os
import sys

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
if str(rank) == os.environ.get("FAIL_RANK"):
    print(f"rank {rank} failing", flush=True)
    sys.exit(3)
total = torch.tensor([rank])
dist.all_reduce(total)
print(f"rank {rank} of {world} sum {total.item()}", flush=True)
dist.destroy_process_group()
