#!/usr/bin/env bash
# The GPU checks (issues 13 and 14) on a machine with an NVIDIA GPU, torch with CUDA at its
# `python3`, and no package index. Carried beside the tree (all git-ignored):
#   .whl/  this project's dependencies as wheels for that python (README: "GPUs")
#   .deb/  bubblewrap's Debian package, unpacked to /tmp/bw (not over /)
#   .lay/  a small wheel that is not on that machine (tomli-w), for a real layer
# Everything it prints and writes lands in $OUT (default /tmp/gpu-out).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CUDA_PY=$(command -v python3)
REPO=$PWD
step() { printf '\n=== %s (%s)\n' "$*" "$(date +%T)"; }

step setup
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/rsite .whl/*.whl || exit 1
dpkg -x .deb/bubblewrap_*.deb /tmp/bw || exit 1
export PATH=/tmp/bw/usr/bin:$PATH PYTHONPATH=/tmp/rsite:$REPO
runner() { python3 -m runner.cli "$@"; }
nvidia-smi -L
"$CUDA_PY" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())'
bwrap --version
runner gpus
runner gpus --json

step "pytest -m gpu (CLI and SDK, default sandbox, base python $CUDA_PY)"
RUNNER_TEST_CUDA_PYTHON=$CUDA_PY timeout 300 python3 -m pytest -m gpu -p no:cacheprovider \
    -W default -v --durations=0 tests/runner/test_gpu_device.py 2>&1 | tee "$OUT/gpu-tests.log"

step "a user's DDP job over the preinstalled torch, with one package layered (cold, then warm)"
export RUNNER_STATE_DIR=/tmp/demo/state RUNNER_CACHE_DIR=/tmp/demo/cache RUNNER_NO_INDEX=1
train=(train --gpus 1 --base-python "$CUDA_PY" --with tomli-w --find-links "$REPO/.lay")
for run in cold warm; do
    TIMEFORMAT="$run: %R s wall"
    time timeout 120 python3 -m runner.cli "${train[@]}" \
        --name "ddp-$run" examples/train_ddp.py --epochs 3
done
runner envs list

step "the queue: two jobs want the machine's GPU; the second waits, then runs"
cat > /tmp/hold.py <<'EOF'
import os, time, torch
torch.ones(1, device="cuda")
print("holding", os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.get_device_name(0), flush=True)
time.sleep(8)
EOF
runner train --detach --name hold-a --gpus 1 --base-python "$CUDA_PY" /tmp/hold.py
sleep 1
runner train --detach --name hold-b --gpus 1 --base-python "$CUDA_PY" /tmp/hold.py
sleep 4
runner gpus
runner status hold-b
timeout 120 python3 -m runner.cli logs -f hold-b
runner jobs
for job in hold-a hold-b; do runner status --json "$job" > "$OUT/$job.json"; done

step "an ordinary user: GPU job in the default sandbox"
useradd -m gpuuser 2>/dev/null
mkdir -p /tmp/userrepo && cp -r runner envs examples tests /tmp/userrepo/ && chmod -R a+rX /tmp/userrepo /tmp/rsite /tmp/bw
unset RUNNER_STATE_DIR RUNNER_CACHE_DIR
su gpuuser -s /bin/bash -c "cd /tmp/userrepo && PATH=$PATH PYTHONPATH=/tmp/rsite:/tmp/userrepo RUNNER_NO_INDEX=1 \
    timeout 120 python3 -m runner.cli train --gpus 1 --base-python $CUDA_PY examples/train_ddp.py --epochs 2 \
    && python3 -m runner.cli gpus"
step done
