"""GPUs without a GPU: a machine of fake driver files and device nodes (`RUNNER_DEVICE_ROOT`).

The driver's files are what `gpus.scan` reads on a real machine (`/proc/driver/
nvidia/gpus/<bus>/information`); the "device nodes" are plain files here, bound
into the sandbox as a real node would be, so a job can tell which it was given.
Assignment, disjointness across processes, the queue, cancel and `kill -9`
while holding or waiting, and the refusal of an impossible request all run for
real. The GPU itself is checked in `test_gpu_device.py`, where there is one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner import gpus
from runner.errors import InvalidJobError
from runner.store import JobStore
from tests.runner.conftest import JOBS, TORCH, RunCli, cli_runner
from tests.runner.test_process import wait_for
from tests.runner.test_sandbox import BWRAP, output, records, status

VIEW = str(JOBS / "gpu_view.py")
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bubblewrap is not installed")


def uuid(i: int) -> str:
    return f"GPU-{i:08x}-1111-2222-3333-444444444444"


def fake_machine(root: Path, count: int) -> Path:
    """`count` H100s in PCI order; device minors in the other order, as they may be."""
    for i in range(count):
        bus = f"0000:{0x18 + i:02x}:00.0"
        folder = root / "proc" / "driver" / "nvidia" / "gpus" / bus
        folder.mkdir(parents=True)
        minor = count - 1 - i
        (folder / "information").write_text(
            "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:  \t\t 50\n"
            f"GPU UUID: \t {uuid(i)}\nVideo BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\n"
            f"DMA Size: \t 52 bits\nBus Location: \t {bus}\nDevice Minor: \t {minor}\n"
            "GPU Firmware: \t 580.95.05\nGPU Excluded: \t No\n"
        )
        (root / "dev").mkdir(exist_ok=True)
        (root / "dev" / f"nvidia{minor}").write_text(f"the node of GPU {i}")
    for control in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (root / "dev" / control).write_text(control)
    return root


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    return fake_machine(tmp_path / "machine", 2)


@pytest.fixture
def run(cli_environ: dict[str, str], machine: Path, tmp_path: Path) -> RunCli:
    return cli_runner({**cli_environ, "RUNNER_DEVICE_ROOT": str(machine)}, tmp_path)


def seen(run: RunCli, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(output(records(run, name))[0])
    return result


def test_the_inventory_reads_the_drivers_files_in_bus_order(tmp_path: Path) -> None:
    found = gpus.scan(fake_machine(tmp_path, 3))
    assert [(g.index, g.uuid, g.minor, g.node) for g in found] == [
        (0, uuid(0), 2, "/dev/nvidia2"),
        (1, uuid(1), 1, "/dev/nvidia1"),
        (2, uuid(2), 0, "/dev/nvidia0"),
    ]
    assert {g.name for g in found} == {"NVIDIA H100 80GB HBM3"}
    assert gpus.scan(tmp_path / "no-driver") == []
    # the pool: the setting, within what the caller's own variables let it see
    assert [g.index for g in gpus.pool(found, "all", {})] == [0, 1, 2]
    assert [g.index for g in gpus.pool(found, "none", {})] == []
    assert [g.index for g in gpus.pool(found, f"0,{uuid(2)}", {})] == [0, 2]
    caller = {"CUDA_VISIBLE_DEVICES": f"{uuid(1)},2"}
    assert [g.index for g in gpus.pool(found, "all", caller)] == [1, 2]
    assert gpus.pool(found, "all", {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpus.pool(found, "all", {"NVIDIA_VISIBLE_DEVICES": "void"}) == []
    with pytest.raises(InvalidJobError, match="RUNNER_GPUS names GPU '7'"):
        gpus.pool(found, "7", {})


def test_runner_gpus_lists_the_pool(run: RunCli) -> None:
    rows = json.loads(run("gpus", "--json").stdout)
    assert [(r["index"], r["uuid"], r["node"], r["job"]) for r in rows] == [
        (0, uuid(0), "/dev/nvidia1", None),
        (1, uuid(1), "/dev/nvidia0", None),
    ]
    assert "NVIDIA H100 80GB HBM3" in run("gpus").stdout


@needs_bwrap
def test_a_job_sees_the_nodes_of_its_own_gpus_and_no_other(run: RunCli) -> None:
    run("train", "--name", "one", "--gpus", "1", VIEW)
    one = seen(run, "one")
    assert one["CUDA_VISIBLE_DEVICES"] == one["NVIDIA_VISIBLE_DEVICES"] == uuid(0)
    assert one["gpu_nodes"] == {"/dev/nvidia1": "the node of GPU 0"}
    assert {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"} <= set(one["nodes"])
    assert status(run, "one")["gpus"] == [uuid(0)]
    run("train", "--name", "second", "--gpus", "1", VIEW)  # the first let its GPU go
    assert seen(run, "second")["CUDA_VISIBLE_DEVICES"] == uuid(0)

    run("train", "--name", "named", "--gpus", "1", VIEW)
    run("train", "--name", "by-index", "--gpus", "1", VIEW)
    run("train", "--name", "other", "--gpus", uuid(1), VIEW)
    assert seen(run, "other")["gpu_nodes"] == {"/dev/nvidia0": "the node of GPU 1"}

    run("train", "--name", "none", VIEW)  # asked for none: sees none, as a pod would
    none = seen(run, "none")
    assert none["nodes"] == [] and none["CUDA_VISIBLE_DEVICES"] == ""
    assert none["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_a_request_the_pool_cannot_meet_is_refused_before_anything(run: RunCli) -> None:
    for args, said in (
        (["--gpus", "3"], "asks for 3 GPUs (3 per node, 1 node) and the pool has 2"),
        (["--gpus", "2", "--nnodes", "2", "--with", "torch==2.13.0"], "asks for 4 GPUs"),
        (["--gpus", "5,0"], "GPU '5' is not in the pool"),
        (["--gpus", "0,1,1", "--nnodes", "2", "--with", "torch"], "3 GPUs named for 2 nodes"),
    ):
        proc = run("train", *args, VIEW, check=False)
        assert proc.returncode in (1, 2) and said in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert run("jobs", "--json").stdout.strip() == "[]"


def _queued(run: RunCli, name: str) -> dict[str, Any] | None:
    found = [r for r in records(run, name) if r["event"] == "job.queued"]
    return found[0] if found else None


def _release(store: JobStore, name: str) -> None:
    (store.workdir(name) / "release").touch()


@needs_bwrap
def test_concurrent_jobs_get_disjoint_gpus_and_a_third_waits_its_turn(
    run: RunCli, store: JobStore
) -> None:
    first = run("train", "--detach", "--gpus", "1", VIEW, "hold").stdout.strip()
    second = run("train", "--detach", "--gpus", "1", VIEW, "hold").stdout.strip()
    try:
        for name in (first, second):
            wait_for(lambda n=name: output(list(store.records(n))), timeout=60)
        got = {seen(run, n)["CUDA_VISIBLE_DEVICES"] for n in (first, second)}
        assert got == {uuid(0), uuid(1)}  # never the same GPU
        holders = {r["uuid"]: r["job"] for r in json.loads(run("gpus", "--json").stdout)}
        assert set(holders.values()) == {first, second}

        third = run("train", "--detach", "--gpus", "1", VIEW).stdout.strip()
        wait_for(lambda: _queued(run, third) is not None, timeout=60)
        queued = _queued(run, third)
        assert queued is not None
        assert (queued["wants"], queued["free"]) == ({"gpu": 1}, {"gpu": 0})
        assert sorted(queued["held_by"]) == sorted([first, second])
        assert status(run, third)["status"] == "Created"  # waiting, as the SDK shows too

        _release(store, first)  # the third starts by itself on the GPU the first let go
        wait_for(lambda: store.load(third).done, timeout=60)
        assert store.load(third).status == "Complete"
        assert seen(run, third)["CUDA_VISIBLE_DEVICES"] == seen(run, first)["CUDA_VISIBLE_DEVICES"]
    finally:
        for name in (first, second):
            _release(store, name)
        for name in (first, second):
            wait_for(lambda n=name: store.load(n).done, timeout=60)


@needs_bwrap
def test_first_come_first_served_and_cancel_or_timeout_while_waiting(
    run: RunCli, store: JobStore
) -> None:
    holder = run("train", "--detach", "--gpus", "1", VIEW, "hold").stdout.strip()
    big = small = ""
    try:
        wait_for(lambda: output(list(store.records(holder))), timeout=60)
        big = run("train", "--detach", "--gpus", "2", VIEW, "hold").stdout.strip()
        wait_for(lambda: _queued(run, big) is not None, timeout=60)
        assert _queued(run, big)["free"] == {"gpu": 1}  # type: ignore[index]
        small = run("train", "--detach", "--gpus", "1", VIEW).stdout.strip()
        wait_for(lambda: _queued(run, small) is not None, timeout=60)
        assert _queued(run, small)["ahead"] == 1  # type: ignore[index]
        doomed = run("train", "--detach", "--gpus", "1", VIEW).stdout.strip()
        wait_for(lambda: _queued(run, doomed) is not None, timeout=60)

        run("cancel", doomed)  # cancelled while it waits: it never starts
        assert (status(run, doomed)["status"], status(run, doomed)["reason"]) == (
            "Failed",
            "cancelled",
        )
        timed = run("train", "--gpus", "1", "--timeout", "1", VIEW, check=False)
        assert timed.returncode == 124  # as for any timeout, the exit code of timeout(1)
        assert "timed out after 1 s, waiting for GPUs" in timed.stderr
        assert "Waiting for 1 GPU: held by " in timed.stderr, timed.stderr
        # one GPU is free all along, and the small job does not jump the queue to take it
        assert status(run, small)["status"] == "Created"

        _release(store, holder)  # now the big job, first in line, takes both
        wait_for(lambda: store.load(big).status == "Running", timeout=60)
        assert status(run, small)["status"] == "Created"
        _release(store, big)
        wait_for(lambda: store.load(small).done, timeout=60)
        assert store.load(small).status == "Complete"
        for name in (doomed, timed.stderr.strip().splitlines()[-1].split()[1]):
            assert not [r for r in records(run, name) if r["event"] == "job.start"]
    finally:
        for name in (holder, big):
            if name:
                _release(store, name)
                wait_for(lambda n=name: store.load(n).done, timeout=60)


@needs_bwrap
def test_a_gpu_is_free_again_when_its_holder_is_killed(
    run: RunCli, store: JobStore, cli_environ: dict[str, str], machine: Path, tmp_path: Path
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "train",
            "--name",
            "held",
            "--gpus",
            "2",
            VIEW,
            "hold",
        ],
        env={**cli_environ, "RUNNER_DEVICE_ROOT": str(machine)},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: "held" in {r.name for r in store.jobs()}, timeout=60)
        wait_for(lambda: store.load("held").status == "Running", timeout=60)
        waiter = run("train", "--detach", "--gpus", "1", VIEW).stdout.strip()
        wait_for(lambda: _queued(run, waiter) is not None, timeout=60)
        os.kill(holder.pid, signal.SIGKILL)  # no cleanup at all: the OS lets the locks go
        holder.wait()
        wait_for(lambda: store.load(waiter).done, timeout=60)
        assert store.load(waiter).status == "Complete"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.torch
@needs_bwrap
def test_each_local_node_gets_gpus_of_its_own_one_rank_per_gpu(
    torch_cache: Path, machine: Path, tmp_path: Path
) -> None:
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
        "RUNNER_DEVICE_ROOT": str(machine),
    }
    run = cli_runner(environ, tmp_path, "--log-format", "json")
    torch = [arg for req in TORCH for arg in ("--with", req)]
    run("train", "--name", "two-nodes", *torch, "--nnodes", "2", "--gpus", "1", VIEW)
    views = {}
    for r in records(run, "two-nodes"):
        if r["event"] == "output" and "rank" in r:
            views[r["step"]] = json.loads(r["line"])
    assert sorted(views) == ["node-0", "node-1"]  # one rank per node: one per GPU
    assert {v["CUDA_VISIBLE_DEVICES"] for v in views.values()} == {uuid(0), uuid(1)}
    for view in views.values():
        assert len(view["gpu_nodes"]) == 1 and view["LOCAL_RANK"] == "0"
    assert len({v["NCCL_HOSTID"] for v in views.values()}) == 2  # nodes meet as hosts do


def show_gpus() -> None:
    import os
    from pathlib import Path

    nodes = sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*"))
    print(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']} nodes={nodes}")


@pytest.mark.torch
@needs_bwrap
def test_the_sdk_gets_the_gpus_of_resources_per_node(
    torch_cache: Path, machine: Path, tmp_path: Path
) -> None:
    from kubeflow.trainer import CustomTrainer

    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    backend = LocalProcessBackend(
        LocalProcessBackendConfig(
            cache_dir=torch_cache, state_dir=tmp_path / "state", device_root=machine
        )
    )
    for key in ("gpu", "nvidia.com/gpu"):
        job = backend.train(
            runtime="torch-distributed",
            trainer=CustomTrainer(
                func=show_gpus, packages_to_install=TORCH, resources_per_node={key: 1}
            ),
        )
        backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
        assert f"CUDA_VISIBLE_DEVICES={uuid(0)} nodes=['nvidia1']" in backend.get_job_logs(job)
    with pytest.raises(InvalidJobError, match="asks for 3 GPUs"):
        backend.train(
            runtime="torch-distributed",
            trainer=CustomTrainer(
                func=show_gpus, packages_to_install=TORCH, resources_per_node={"gpu": 3}
            ),
        )


@pytest.mark.torch
@needs_bwrap
def test_a_gpu_job_starts_warm_on_the_gpus_of_its_standby_and_cold_on_others(
    torch_cache: Path, machine: Path, tmp_path: Path
) -> None:
    """A standby of a 1-GPU job holds the first GPU's device node (never CUDA): the next
    such job, leased that GPU, starts warm and sees what the cold one saw; one leased the
    other GPU (the first is busy) starts cold, saying why."""
    from kubeflow.trainer import CustomTrainer

    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig
    from tests.runner.test_warm import _differences, _lines, _normal, _ready, fingerprint

    backend = LocalProcessBackend(
        LocalProcessBackendConfig(
            cache_dir=torch_cache, state_dir=tmp_path / "state", device_root=machine
        )
    )

    def job(func: Any) -> str:
        trainer = CustomTrainer(func=func, packages_to_install=TORCH, resources_per_node={"gpu": 1})
        return backend.train(runtime="torch-distributed", trainer=trainer)

    def probe() -> tuple[str, dict[str, Any]]:
        name = job(fingerprint)
        backend.wait_for_job_status(name, polling_interval=0.2, timeout=300)
        (line,) = [x for x in _lines(backend, name) if x.startswith("{")]
        return name, json.loads(line)

    cold, cold_fp = probe()
    assert cold_fp["environ"]["CUDA_VISIBLE_DEVICES"] == uuid(0)
    _ready(backend)
    warm, warm_fp = probe()
    record, cold_record = backend.store.load(warm), backend.store.load(cold)
    assert record.warm is not None and cold_record.warm is None
    seen, want = _normal(warm_fp, warm, record.tag), _normal(cold_fp, cold, cold_record.tag)
    assert seen == want, _differences(seen, want)
    _ready(backend)
    busy = job(napper)  # takes the standby, and GPU 0, and holds it
    wait_for(lambda: "napping" in list(backend.get_job_logs(busy)), timeout=300)
    _ready(backend)
    other = job(show_gpus)
    backend.wait_for_job_status(other, polling_interval=0.2, timeout=300)
    assert f"CUDA_VISIBLE_DEVICES={uuid(1)} nodes=['nvidia0']" in backend.get_job_logs(other)
    assert backend.store.load(other).warm is None
    (why,) = [r["why"] for r in backend.store.records(other) if r["event"] == "job.cold"]
    assert "sandbox" in why, why
    backend.delete_job(busy)


def napper() -> None:
    import time

    print("napping", flush=True)
    time.sleep(300)


def test_cpus_give_each_job_cores_of_its_own_and_a_job_waits_for_them(
    run: RunCli, store: JobStore
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.fail("this test needs 2 cores to give two jobs one each")
    refused = run("train", "--cpus", str(len(cores) + 1), VIEW, check=False)
    assert refused.returncode == 1 and f"and this runner may use {len(cores)}" in refused.stderr
    first = run("train", "--detach", "--cpus", "1", VIEW, "hold").stdout.strip()
    rest = run("train", "--detach", "--cpus", str(len(cores) - 1), VIEW, "hold").stdout.strip()
    try:
        for name in (first, rest):
            wait_for(lambda n=name: output(list(store.records(n))), timeout=60)
        mine, theirs = seen(run, first), seen(run, rest)
        assert len(mine["cpus"]) == 1 and mine["OMP_NUM_THREADS"] == "1"
        assert sorted(mine["cpus"] + theirs["cpus"]) == cores  # disjoint, all given out
        assert status(run, first)["cpus"] == mine["cpus"]
        waiting = run("train", "--detach", "--cpus", "1", VIEW).stdout.strip()
        wait_for(lambda: _queued(run, waiting) is not None, timeout=60)
        assert _queued(run, waiting)["wants"] == {"cpu": 1}  # type: ignore[index]
        _release(store, first)
        wait_for(lambda: store.load(waiting).done, timeout=60)
        assert seen(run, waiting)["cpus"] == mine["cpus"]
    finally:
        for name in (first, rest):
            _release(store, name)
            wait_for(lambda n=name: store.load(n).done, timeout=60)
