"""The Kubeflow Trainer SDK surface, with the real `kubeflow` package and real torchrun."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kubeflow.trainer import BuiltinTrainer, CustomTrainer, TorchTuneConfig, TrainerClient
from kubeflow.trainer.constants import constants
from kubeflow.trainer.options import Name

from envs import Interpreter, formats
from envs.requirements import parse
from runner.backend import (
    LocalProcessBackend,
    LocalProcessBackendConfig,
    Lockfile,
    cpus_per_node,
    gpus_per_node,
    ranks_per_node,
    trainer_client,
)
from runner.process import tagged
from runner.spec import env_spec, open_cache
from tests.conftest import UvSpy
from tests.runner.conftest import TORCH
from tests.runner.test_process import alive, wait_for

# -- training functions, sent to jobs by their source -------------------------------------


def get_torch_dist() -> None:
    """The SDK README's example function, ending its group as README.md tells users to.

    Without `destroy_process_group()`, gloo can abort at interpreter exit (about
    2 runs in 20, under plain torchrun too): a test must not depend on those odds.
    """
    import os

    import torch.distributed as dist

    dist.init_process_group(backend="gloo")
    print("PyTorch Distributed Environment")
    print(f"WORLD_SIZE: {dist.get_world_size()}")
    print(f"RANK: {dist.get_rank()}")
    print(f"LOCAL_RANK: {os.environ['LOCAL_RANK']}")
    dist.destroy_process_group()


def all_reduce_sum() -> None:
    """A real collective. The group is destroyed at the end: without that, gloo can abort
    at interpreter exit ("terminate called without an active exception"), under plain
    torchrun too (2 runs in 20 here)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend="gloo")
    total = torch.tensor([dist.get_rank()])
    dist.all_reduce(total)
    print(f"SUM: {total.item()}")
    dist.destroy_process_group()


def show_args(lr: float, epochs: int, layers: list[int], name: str = "default") -> None:
    import os

    print(f"lr={lr} epochs={epochs} layers={layers} name={name} rank={os.environ['RANK']}")
    print(f"MY_VAR={os.environ.get('MY_VAR')} PATH_SET={bool(os.environ.get('PATH'))}")


def slow_printer() -> None:
    import time

    print("first", flush=True)
    time.sleep(4)
    print("second", flush=True)


def sleeper() -> None:
    import os
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"pid {os.getpid()}", flush=True)
    time.sleep(600)


def use_volumes() -> None:
    from pathlib import Path

    print(Path("/tmp/data/input.txt").read_text())
    Path("/tmp/out/result.txt").write_text("written by the job")


def hog() -> None:
    held = [bytearray(1 << 20) for _ in range(3000)]  # 3 GiB, a mebibyte at a time
    print(f"held {len(held)} MiB")


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path, uv_spy: UvSpy) -> LocalProcessBackendConfig:
    """Offline-incapable bits are avoided: no job is started with this one."""
    return LocalProcessBackendConfig(
        cache_dir=tmp_path / "cache", state_dir=tmp_path / "state", uv=str(uv_spy.path)
    )


@pytest.fixture
def torch_cfg(torch_cache: Path, tmp_path: Path, uv_spy: UvSpy) -> LocalProcessBackendConfig:
    return LocalProcessBackendConfig(
        cache_dir=torch_cache, state_dir=tmp_path / "state", uv=str(uv_spy.path), cancel_grace=1
    )


def trainer(func, **kwargs) -> CustomTrainer:  # type: ignore[no-untyped-def]
    return CustomTrainer(func=func, packages_to_install=TORCH, **kwargs)


# -- the surface, no job started ---------------------------------------------------------


def test_runtimes(cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(cfg)
    (runtime,) = backend.list_runtimes()
    assert runtime.name == "torch-distributed" and runtime.trainer.framework == "torch"
    assert backend.get_runtime("torch-distributed") == runtime
    assert backend.get_runtime_packages(runtime) == ["torch==2.13.0", "numpy"]  # the image's
    with pytest.raises(ValueError, match=r"Runtime 'nope' not found\."):
        backend.get_runtime("nope")


def test_original_errors_before_anything_runs(
    cfg: LocalProcessBackendConfig, uv_spy: UvSpy
) -> None:
    backend = LocalProcessBackend(cfg)
    with pytest.raises(ValueError, match="Runtime must be provided"):
        backend.train(trainer=trainer(show_args))
    with pytest.raises(ValueError, match=r"Runtime 'nope' not found\."):
        backend.train(runtime="nope", trainer=trainer(show_args))
    with pytest.raises(ValueError, match="CustomTrainer must be set with LocalProcessBackend"):
        backend.train(runtime="torch-distributed", trainer=BuiltinTrainer(TorchTuneConfig()))
    with pytest.raises(ValueError, match="Duplicate dependency in packages_to_install"):
        backend.train(
            runtime="torch-distributed",
            trainer=CustomTrainer(func=show_args, packages_to_install=["NumPy", "numpy==2"]),
        )
    with pytest.raises(ValueError, match=r"func_args\['model'\] is not JSON"):
        backend.train(
            runtime="torch-distributed", trainer=trainer(show_args, func_args={"model": object()})
        )
    for args in ([1], "lr=0.1", 0.1):  # not a dict: one line, from the SDK's ValueError
        with pytest.raises(ValueError, match=r"func_args is a \w+, not a dict: .*\{'lr': 0\.1\}"):
            backend.train(runtime="torch-distributed", trainer=trainer(show_args, func_args=args))
    with pytest.raises(ValueError, match="lambda"):
        backend.train(runtime="torch-distributed", trainer=trainer(lambda: None))
    with pytest.raises(ValueError, match="environment variable name 'BAD-KEY'"):
        backend.train(runtime="torch-distributed", trainer=trainer(show_args, env={"BAD-KEY": "1"}))
    assert backend.list_jobs() == []
    assert uv_spy.calls() == []


def test_unknown_job_errors(cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(cfg)
    for call in (
        lambda: backend.get_job("nope"),
        lambda: list(backend.get_job_logs("nope")),
        lambda: backend.delete_job("nope"),
        lambda: backend.wait_for_job_status("nope"),
    ):
        with pytest.raises(ValueError, match="No TrainJob with name nope"):
            call()


def test_wait_for_job_status_validates_like_the_original(cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(cfg)
    with pytest.raises(ValueError, match="Polling interval must be a positive number"):
        backend.wait_for_job_status("x", polling_interval=0)
    with pytest.raises(ValueError, match="Polling interval must be strictly less than timeout"):
        backend.wait_for_job_status("x", polling_interval=5, timeout=5)
    with pytest.raises(ValueError, match="must be a subset of"):
        backend.wait_for_job_status("x", status={"Done"})


def test_resources_per_node_become_local_ranks_and_gpus() -> None:
    assert ranks_per_node(None) == 1
    assert ranks_per_node({"cpu": 2, "memory": "4G"}) == 2
    assert ranks_per_node({"cpu": "500m"}) == 1
    assert ranks_per_node({"gpu": 2, "cpu": 3}) == 2  # one rank per GPU, as on the cluster
    assert gpus_per_node({"nvidia.com/gpu": 1}) == 1
    assert gpus_per_node({"cpu": 3}) == 0
    assert (cpus_per_node({"cpu": "500m"}), cpus_per_node({"cpu": 2}), cpus_per_node(None)) == (
        0.5,
        2,
        0,
    )
    with pytest.raises(ValueError, match="is not a whole number"):
        gpus_per_node({"gpu": "two"})


def test_trainer_client_uses_this_backend(cfg: LocalProcessBackendConfig) -> None:
    client = trainer_client(cfg)
    assert isinstance(client, TrainerClient)
    assert isinstance(client.backend, LocalProcessBackend)
    assert [r.name for r in client.list_runtimes()] == ["torch-distributed"]


# -- real jobs (torch) ------------------------------------------------------------


@pytest.mark.torch
def test_readme_example_completes_and_a_second_train_reuses_the_env(
    torch_cfg: LocalProcessBackendConfig, uv_spy: UvSpy
) -> None:
    client = trainer_client(torch_cfg)
    job = client.train(
        runtime=client.get_runtime("torch-distributed"),
        trainer=trainer(get_torch_dist, resources_per_node={"cpu": 2}),
    )
    done = client.wait_for_job_status(job, timeout=600, polling_interval=1)
    assert done.status == constants.TRAINJOB_COMPLETE
    assert [(s.name, s.status) for s in done.steps] == [("node-0", "Complete")]
    logs = list(client.get_job_logs(job))
    assert "[rank 0] WORLD_SIZE: 2" in logs and "[rank 1] RANK: 1" in logs
    assert "[rank 1] LOCAL_RANK: 1" in logs

    uv_calls = len(uv_spy.calls())
    started = time.monotonic()
    again = client.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(
            func=get_torch_dist,
            packages_to_install=["NumPy", "Torch == 2.13.0"],
            resources_per_node={"cpu": 2},
        ),
    )
    assert time.monotonic() - started < 1.0, "train() returns at once; the job runs in a thread"
    assert client.wait_for_job_status(again, polling_interval=0.2).status == "Complete"
    assert len(uv_spy.calls()) == uv_calls, "warm reuse runs no uv"
    reasons = [e.reason for e in client.get_job_events(again)]
    assert "env.hit" in reasons and "env.build" not in reasons


def show_torch_env() -> None:
    """What a worker is given, and that ranks meet with it (gloo, one all_reduce)."""
    import os

    import torch
    import torch.distributed as dist

    dist.init_process_group(backend="gloo")
    total = torch.ones(1)
    dist.all_reduce(total)
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_NAME")
    print(" ".join(f"{n}={os.environ.get(n)}" for n in names), f"sum={int(total.item())}")
    print(f"run={os.environ.get('TORCHELASTIC_RUN_ID')} master={os.environ.get('MASTER_ADDR')}")
    dist.destroy_process_group()


@pytest.mark.torch
@pytest.mark.parametrize("agent", [False, True])
def test_a_one_rank_job_gets_torchruns_variables_with_or_without_its_agent(
    torch_cfg: LocalProcessBackendConfig, agent: bool
) -> None:
    backend = LocalProcessBackend(torch_cfg.model_copy(update={"torchrun_agent": agent}))
    job = backend.train(runtime="torch-distributed", trainer=trainer(show_torch_env))
    done = backend.wait_for_job_status(job, polling_interval=0.1, timeout=300)
    logs = list(backend.get_job_logs(job))
    assert done.status == "Complete", logs
    want = "RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 GROUP_RANK=0 ROLE_NAME=default"
    assert f"{want} sum=1" in logs, logs
    (run,) = [line for line in logs if "run=" in line]
    assert f"run={job} master=127." in run, run
    records = list(backend.store.records(job))
    assert {r.get("rank") for r in records if r["event"] == "output"} == {0}
    (start,) = [r for r in records if r["event"] == "job.start"]
    under_agent = any("torchrun" in a or "torch.distributed.run" in a for a in start["argv"])
    assert under_agent == agent, start["argv"]


@pytest.mark.torch
def test_func_args_arrive_as_keyword_arguments_with_env_and_name(
    torch_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(torch_cfg)
    job = backend.train(
        runtime="torch-distributed",
        trainer=trainer(
            show_args,
            func_args={"lr": 0.5, "epochs": 3, "layers": [4, 2]},
            env={"MY_VAR": "from-sdk"},
        ),
        options=[Name(name="named-job")],
    )
    assert job == "named-job"
    backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    logs = list(backend.get_job_logs(job))
    assert "lr=0.5 epochs=3 layers=[4, 2] name=default rank=0" in logs
    assert "MY_VAR=from-sdk PATH_SET=True" in logs


@pytest.mark.torch
def test_a_function_job_runs_whatever_the_umask(torch_cfg: LocalProcessBackendConfig) -> None:
    """Its entry file is read by the job's user (root's job runs as another one), also when
    the calling process has `umask 077`."""
    backend = LocalProcessBackend(torch_cfg)
    before = os.umask(0o077)
    try:
        args = {"lr": 0.1, "epochs": 1, "layers": [2]}
        job = backend.train(runtime="torch-distributed", trainer=trainer(show_args, func_args=args))
        done = backend.wait_for_job_status(job, status={"Complete", "Failed"}, timeout=300)
    finally:
        os.umask(before)
    assert done.status == "Complete", list(backend.get_job_logs(job))
    assert "lr=0.1 epochs=1 layers=[2] name=default rank=0" in backend.get_job_logs(job)


@pytest.mark.torch
def test_follow_streams_lines_before_the_job_ends(torch_cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(torch_cfg)
    job = backend.train(runtime="torch-distributed", trainer=trainer(slow_printer))
    seen = []
    for line in backend.get_job_logs(job, follow=True):
        seen.append((line, backend.get_job(job).status))
    assert seen[0] == ("first", "Running")
    assert [line for line, _ in seen] == ["first", "second"]
    assert backend.get_job(job).status == "Complete"


@pytest.mark.torch
def test_wait_times_out_and_a_failed_job_raises(torch_cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(torch_cfg)
    job = backend.train(runtime="torch-distributed", trainer=trainer(slow_printer))
    with pytest.raises(TimeoutError, match=f"Timeout waiting for TrainJob {job}"):
        backend.wait_for_job_status(job, timeout=1, polling_interval=0.5)
    backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)

    failing = backend.train(
        runtime="torch-distributed", trainer=trainer(show_args, func_args={"lr": 1})
    )
    with pytest.raises(RuntimeError, match=f"TrainJob {failing} is Failed"):
        backend.wait_for_job_status(failing, polling_interval=0.2, timeout=300)
    assert backend.get_job(failing).steps[0].status == "Failed"
    assert any(
        "missing 2 required positional arguments" in line for line in backend.get_job_logs(failing)
    )


@pytest.mark.torch
def test_a_lockfile_option_runs_the_job_in_exactly_that_lock(
    torch_cfg: LocalProcessBackendConfig, tmp_path: Path, uv_spy: UvSpy
) -> None:
    backend = LocalProcessBackend(torch_cfg)
    lock = open_cache(torch_cfg).resolve(env_spec(torch_cfg, [parse(r) for r in TORCH]))
    path = tmp_path / "locked.txt"
    path.write_text(formats.write(lock, "requirements", Interpreter.current()))
    with pytest.raises(ValueError, match="cannot read lockfile"):
        backend.train(
            runtime="torch-distributed",
            trainer=trainer(all_reduce_sum),
            options=[Lockfile("nope.toml")],
        )
    with pytest.raises(ValueError, match="give packages or a lockfile, not both"):
        backend.train(
            runtime="torch-distributed",
            trainer=trainer(all_reduce_sum),
            options=[Lockfile(str(path))],
        )
    resolutions = len(uv_spy.calls("pip compile"))
    job = backend.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(func=all_reduce_sum, resources_per_node={"cpu": 2}),
        options=[Lockfile(str(path))],
    )
    backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    assert "[rank 1] SUM: 1" in list(backend.get_job_logs(job))
    record = backend.store.load(job)
    assert record.spec.lockfile is not None and record.spec.lockfile.source == str(path)
    assert len(uv_spy.calls("pip compile")) == resolutions


@pytest.mark.torch
def test_memory_in_resources_per_node_is_the_jobs_memory_limit(
    torch_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(torch_cfg)
    with pytest.raises(ValueError, match="resources_per_node memory 'lots' is invalid"):
        backend.train(
            runtime="torch-distributed", trainer=trainer(hog, resources_per_node={"memory": "lots"})
        )
    assert backend.list_jobs() == []
    job = backend.train(
        runtime="torch-distributed", trainer=trainer(hog, resources_per_node={"memory": "1Gi"})
    )
    with pytest.raises(RuntimeError, match=f"TrainJob {job} is Failed"):
        backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    reason = backend.store.load(job).reason or ""
    assert "memory limit of 1.0 GiB exceeded" in reason, reason
    assert not any("held" in line for line in backend.get_job_logs(job))


@pytest.mark.torch
def test_delete_job_on_a_running_job_leaves_no_process(
    torch_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(torch_cfg)
    job = backend.train(
        runtime="torch-distributed", trainer=trainer(sleeper, resources_per_node={"cpu": 2})
    )
    wait_for(lambda: sum("pid " in line for line in backend.get_job_logs(job)) == 2, timeout=300)
    tag = backend.store.load(job).tag
    pids = tagged(tag)  # host pids: inside the sandbox the ranks see their own pid namespace
    assert backend.get_job(job).status == "Running" and len(pids) >= 3
    backend.delete_job(job)
    wait_for(lambda: not any(alive(p) for p in pids))
    assert tagged(tag) == []
    with pytest.raises(ValueError, match=f"No TrainJob with name {job}"):
        backend.get_job(job)


@pytest.mark.torch
def test_two_backends_over_one_state_dir_see_the_same_jobs(
    torch_cfg: LocalProcessBackendConfig,
) -> None:
    first = LocalProcessBackend(torch_cfg)
    job = first.train(
        runtime="torch-distributed", trainer=trainer(all_reduce_sum, resources_per_node={"cpu": 2})
    )
    second = LocalProcessBackend(torch_cfg)
    assert [j.name for j in second.list_jobs()] == [job]
    assert [j.name for j in second.list_jobs(second.get_runtime("torch-distributed"))] == [job]
    done = second.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    assert done.status == "Complete"
    assert {"[rank 0] SUM: 1", "[rank 1] SUM: 1"} <= set(second.get_job_logs(job))


@pytest.mark.torch
def test_cleanup_venv_removes_scratch_but_keeps_cache_and_logs(
    torch_cfg: LocalProcessBackendConfig,
) -> None:
    for cleanup in (True, False):
        backend = LocalProcessBackend(torch_cfg.model_copy(update={"cleanup_venv": cleanup}))
        job = backend.train(runtime="torch-distributed", trainer=trainer(get_torch_dist))
        backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
        assert backend.store.workdir(job).exists() is not cleanup
        assert (backend.store.dir(job) / "home").exists() is not cleanup
        assert (backend.store.dir(job) / "entry.py").exists() is not cleanup
        assert "RANK: 0" in list(backend.get_job_logs(job))
        env_key = backend.store.load(job).env_key
        assert (torch_cfg.cache_dir / "envs" / str(env_key) / "bin" / "torchrun").exists()


@pytest.mark.torch
def test_num_nodes_become_local_torchrun_agents_with_their_own_logs(
    torch_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(torch_cfg)
    job = backend.train(runtime="torch-distributed", trainer=trainer(all_reduce_sum, num_nodes=2))
    done = backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    assert done.num_nodes == 2
    assert [(s.name, s.status) for s in done.steps] == [
        ("node-0", "Complete"),
        ("node-1", "Complete"),
    ]
    node0, node1 = (list(backend.get_job_logs(job, step=f"node-{n}")) for n in (0, 1))
    assert len(node0) == len(node1) == 1
    assert {node0[0], node1[0]} == {"[rank 0] SUM: 1", "[rank 1] SUM: 1"}


@pytest.mark.torch
def test_volumes_of_the_backend_config_are_mounted_in_every_job(
    torch_cfg: LocalProcessBackendConfig, tmp_path: Path
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    for folder in (data, out):
        folder.mkdir()
    (data / "input.txt").write_text("read from a volume")
    if os.geteuid() == 0:  # root's jobs run as a user of their own: the output is to be its
        from runner.sandbox.identity import resolve

        who = resolve(torch_cfg.job_user)
        os.chown(out, who.uid, who.gid)
    cfg = LocalProcessBackendConfig(
        **torch_cfg.model_dump(exclude={"volumes"}),
        volumes=[f"{data}:/tmp/data", f"{out}:/tmp/out:rw"],
    )
    backend = LocalProcessBackend(cfg)
    job = backend.train(runtime="torch-distributed", trainer=trainer(use_volumes))
    backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    assert "read from a volume" in list(backend.get_job_logs(job))
    assert (out / "result.txt").read_text() == "written by the job"
    with pytest.raises(ValueError, match="does not exist"):
        LocalProcessBackendConfig(volumes=[str(tmp_path / "missing")])
