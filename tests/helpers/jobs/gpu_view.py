"""Print the GPUs and CPUs a job sees, as one JSON line; with `hold`, then wait for `release`."""

import json
import os
import sys
import time
from pathlib import Path

nodes = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
seen = {
    "nodes": nodes,
    "gpu_nodes": {p: Path(p).read_text() for p in nodes if p[len("/dev/nvidia") :].isdigit()},
    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "NVIDIA_VISIBLE_DEVICES": os.environ.get("NVIDIA_VISIBLE_DEVICES"),
    "NCCL_HOSTID": os.environ.get("NCCL_HOSTID"),
    "LOCAL_RANK": os.environ.get("LOCAL_RANK"),
    "cpus": sorted(os.sched_getaffinity(0)),
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
}
print(json.dumps(seen), flush=True)
if sys.argv[1:] == ["hold"]:
    deadline = time.monotonic() + 300
    while not Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
