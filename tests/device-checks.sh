#!/usr/bin/env bash
# The checks that need the device machine: GPUs (issues 13 and 14) and cgroup v2 (issues 11
# and 12; CI's machine runs cgroup v1). A machine with an NVIDIA GPU, torch with CUDA at its
# `python3`, root, and no package index. Carried beside the tree (all git-ignored):
#   .whl/  this project's dependencies as wheels for that python (README: "GPUs")
#   .deb/  bubblewrap's Debian package, unpacked to /tmp/bw (not over /)
#   .lay/  a small wheel that is not on that machine (tomli-w), for a real layer
# Everything it prints and writes lands in $OUT (default /tmp/gpu-out). Sections to run are
# its arguments (default all): tests demo queue user cgroup; TESTS picks the pytest files.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CUDA_PY=$(command -v python3)
REPO=$PWD
SECTIONS=" ${*:-tests demo queue user cgroup} "
want() { [[ $SECTIONS == *" $1 "* ]]; }
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
useradd -m gpuuser 2>/dev/null  # an ordinary user, with a copy of the tree it can read
rm -rf /tmp/userrepo && mkdir -p /tmp/userrepo && cp -r runner envs examples tests /tmp/userrepo/
chmod -R a+rX /tmp/userrepo /tmp/rsite /tmp/bw

if want tests; then
step "pytest: GPU module (CLI and SDK, default sandbox, base python $CUDA_PY), cgroup v2, limits"
cat /proc/self/cgroup /sys/fs/cgroup/cgroup.subtree_control
# one process (`-o addopts=`: not pytest-xdist's workers, which are not carried): one GPU
RUNNER_TEST_CUDA_PYTHON=$CUDA_PY timeout 300 python3 -m pytest -p no:cacheprovider -W default -o addopts= \
    -v --durations=5 ${TESTS:-tests/runner/test_gpu_device.py tests/runner/test_cgroup.py \
    tests/runner/test_systemd_scope.py tests/runner/test_sandbox.py tests/runner/test_scopes.py} 2>&1 | tee "$OUT/tests.log"
fi
if want demo; then
step "a user's DDP job over the preinstalled torch, with one package layered (cold, then warm)"
export RUNNER_STATE_DIR=/tmp/demo/state RUNNER_CACHE_DIR=/tmp/demo/cache RUNNER_NO_INDEX=1
train=(train --gpus 1 --base-python "$CUDA_PY" --with tomli-w --find-links "$REPO/.lay")
for run in cold warm; do
    TIMEFORMAT="$run: %R s wall"
    time timeout 120 python3 -m runner.cli "${train[@]}" \
        --name "ddp-$run" examples/train_ddp.py --epochs 3
done
runner envs list
fi
if want queue; then
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
fi
if want user; then
step "an ordinary user: GPU job in the default sandbox"
unset RUNNER_STATE_DIR RUNNER_CACHE_DIR
su gpuuser -s /bin/bash -c "cd /tmp/userrepo && export PATH=$PATH PYTHONPATH=/tmp/rsite:/tmp/userrepo \
    RUNNER_NO_INDEX=1 && python3 -m runner.cli gpus && timeout 120 python3 -m runner.cli \
    --log-format console train --gpus 1 --base-python $CUDA_PY examples/train_ddp.py --epochs 2"
fi
if want cgroup; then
step "cgroup v2: a runner alone in a cgroup delegated to an ordinary user"
D=/sys/fs/cgroup/srdeleg
mkdir -p $D && echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
chown gpuuser $D $D/cgroup.procs $D/cgroup.subtree_control $D/cgroup.threads
cp tests/helpers/jobs/hog.py /tmp/userrepo/hog.py
as_user="cd /tmp/userrepo && exec setpriv --reuid=gpuuser --regid=gpuuser --init-groups \
    env HOME=/home/gpuuser PATH=$PATH PYTHONPATH=/tmp/rsite:/tmp/userrepo RUNNER_NO_INDEX=1"
sh -c "echo \$\$ > $D/cgroup.procs && $as_user python3 -m runner.cli train --name deleg \
    --memory 150M --processes 20 hog.py 1000"
sh -c "$as_user python3 -m runner.cli logs --json deleg" | grep -E 'sandbox|job.end|stderr'
ls -d $D/*/
step "cgroup v2: an ordinary user's runner that shares its delegated cgroup: rlimits, said so"
D2=/sys/fs/cgroup/srshared
mkdir -p $D2 && chown gpuuser $D2 $D2/cgroup.procs $D2/cgroup.subtree_control $D2/cgroup.threads
sh -c "echo \$\$ > $D2/cgroup.procs && exec sleep 120" &
sleep 0.5
sh -c "echo \$\$ > $D2/cgroup.procs && $as_user python3 -m runner.cli train --name shared \
    --memory 150M hog.py 1000"
sh -c "$as_user python3 -m runner.cli logs --json shared" | grep -E 'sandbox|job.end'
cat $D2/cgroup.procs
kill %1
step "systemd on this machine (issue 12: a systemd user scope, where systemd is there)"
cat /proc/1/comm; ls -d /run/systemd/system 2>&1
command -v systemd-run systemctl busctl dbus-daemon 2>&1; systemctl --version 2>&1 | head -1
fi
step done
