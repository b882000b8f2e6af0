"""What CUDA a job sees: device count and names; with ranks, a 1-step NCCL all_reduce."""

import os

import torch

count = torch.cuda.device_count()
print(f"cuda {torch.cuda.is_available()} devices {count}", flush=True)
if count and "RANK" in os.environ:
    import torch.distributed as dist

    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    total = torch.ones(1, device="cuda") * (dist.get_rank() + 1)
    dist.all_reduce(total)
    name = torch.cuda.get_device_name(local)
    print(f"rank {dist.get_rank()} nccl sum {int(total.item())} on {name}", flush=True)
    dist.destroy_process_group()
