"""Real torchrun on the CPU (gloo), with the local torch 2.13.0 build from PIP_FIND_LINKS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.process import end_tree, tagged
from runner.store import JobStore
from tests.runner.conftest import JOBS, TORCH, RunCli, cli_runner
from tests.runner.test_process import alive, wait_for

pytestmark = pytest.mark.torch

WITH_TORCH = [arg for req in TORCH for arg in ("--with", req)]


Run = RunCli


@pytest.fixture
def run(torch_cache: Path, tmp_path: Path) -> Run:
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
        "RUNNER_CANCEL_GRACE": "1",
    }

    return cli_runner(environ, tmp_path, "--log-format", "json")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def outputs(run: Run, name: str) -> list[dict[str, Any]]:
    recs = [json.loads(line) for line in run("logs", name, "--json").stdout.splitlines()]
    return [r for r in recs if r["event"] == "output" and "rank" in r]


LAUNCHERS = {"direct": [], "agent": ["--torchrun"]}
"""One node's ranks start directly (`ranks.py`), or under torchrun's agent with `--torchrun`."""


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_rank_torchrun_completes_with_both_ranks_in_the_log(run: Run, launcher: str) -> None:
    run(
        "train",
        "--name",
        "ddp",
        *WITH_TORCH,
        *LAUNCHERS[launcher],
        "--nproc-per-node",
        "2",
        str(JOBS / "ddp_check.py"),
    )
    lines = {(r["rank"], r["line"]) for r in outputs(run, "ddp")}
    assert (0, "rank 0 of 2 sum 1") in lines and (1, "rank 1 of 2 sum 1") in lines
    assert json.loads(run("status", "ddp", "--json").stdout)["status"] == "Complete"
    records = [json.loads(line) for line in run("logs", "ddp", "--json").stdout.splitlines()]
    (start,) = [r for r in records if r["event"] == "job.start"]
    agent = any(a.endswith("/torchrun") or a == "torch.distributed.run" for a in start["argv"])
    assert agent == (launcher == "agent"), start["argv"]
    assert any(a.endswith("/ranks.py") for a in start["argv"]) == (launcher == "direct")


@pytest.mark.parametrize(("launcher", "code"), [("direct", 3), ("agent", 1)])
def test_a_failing_rank_fails_the_job_with_its_exit_code(
    run: Run, launcher: str, code: int
) -> None:
    """Started directly, the node exits with the failed rank's own code (3); torchrun's agent
    exits with 1 whatever the rank's was."""
    proc = run(
        "train",
        "--name",
        "ddpfail",
        *WITH_TORCH,
        *LAUNCHERS[launcher],
        "--nproc-per-node",
        "2",
        "--env",
        "FAIL_RANK=1",
        str(JOBS / "ddp_check.py"),
        check=False,
    )
    status = json.loads(run("status", "ddpfail", "--json").stdout)
    assert status["status"] == "Failed" and status["exit_code"] == code == proc.returncode
    assert status["reason"] == f"node-0 exited with code {code}"
    assert (1, "rank 1 failing") in {(r["rank"], r["line"]) for r in outputs(run, "ddpfail")}


def test_ranks_start_whatever_the_umask(run: Run, torch_cache: Path, tmp_path: Path) -> None:
    """`ranks.py` is written into the job's folder: readable by the job's user (root's job
    runs as another) also under `umask 077`."""
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
    }
    umask = ["sh", "-c", 'umask 077 && exec "$@"', "-", sys.executable, "-m", "runner.cli"]
    argv = ["train", "--name", "tight", *WITH_TORCH, "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*umask, *argv, str(JOBS / "ddp_check.py")],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {(r["rank"], r["line"]) for r in outputs(run, "tight")}
    assert {(0, "rank 0 of 2 sum 1"), (1, "rank 1 of 2 sum 1")} <= lines


def test_two_local_nodes_each_run_a_torchrun_agent(run: Run) -> None:
    run(
        "train",
        "--name",
        "nodes",
        *WITH_TORCH,
        "--nnodes",
        "2",
        "--nproc-per-node",
        "2",
        str(JOBS / "ddp_check.py"),
    )
    lines = outputs(run, "nodes")
    # c10d gives node ranks in join order: each agent holds two consecutive global ranks
    by_step = {r["step"]: set() for r in lines}
    for r in lines:
        by_step[r["step"]].add(r["rank"])
    assert sorted(by_step) == ["node-0", "node-1"]
    assert sorted(map(sorted, by_step.values())) == [[0, 1], [2, 3]]
    assert {(r["rank"], r["line"]) for r in lines} >= {
        (rank, f"rank {rank} of 4 sum 6") for rank in range(4)
    }


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_cancel_of_a_two_rank_job_leaves_no_process(
    run: Run, tmp_path: Path, launcher: str
) -> None:
    name = run(
        "train",
        "--detach",
        *WITH_TORCH,
        *LAUNCHERS[launcher],
        "--nproc-per-node",
        "2",
        str(JOBS / "torch_sleeper.py"),
    ).stdout.strip()
    store = JobStore(tmp_path / "state")

    def both_ranks_up() -> bool:
        ranks = {
            r["rank"]
            for r in store.records(name)
            if r["event"] == "output" and r["line"].startswith("pids ")
        }
        return ranks == {0, 1}

    wait_for(both_ranks_up, timeout=300)
    tag = store.load(name).tag
    # host pids (the ranks see their own pid namespace): sandbox, agent or ranks.py, both ranks
    everyone = tagged(tag)
    assert len(everyone) >= 4, everyone
    groups = {_pgid(p) for p in everyone}
    run("cancel", name)
    wait_for(lambda: not any(alive(p) for p in everyone))
    procs = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    assert [p for p in procs if _pgid(p) in groups and alive(p)] == []
    assert tagged(tag) == []
    assert store.load(name).status == "Failed"


def _pgid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except OSError:
        return None


@pytest.mark.parametrize("nodes", ["1", "2"])
def test_without_network_ranks_and_nodes_still_meet_on_loopback(run: Run, nodes: str) -> None:
    name = f"offline-{nodes}"
    run(
        "train",
        "--name",
        name,
        "--no-network",
        *WITH_TORCH,
        "--nnodes",
        nodes,
        "--nproc-per-node",
        "2",
        str(JOBS / "ddp_check.py"),
    )
    world = 2 * int(nodes)
    total = sum(range(world))
    assert {(r["rank"], r["line"]) for r in outputs(run, name)} >= {
        (rank, f"rank {rank} of {world} sum {total}") for rank in range(world)
    }


@pytest.mark.parametrize(("nodes", "mode"), [("1", "auto"), ("2", "auto"), ("1", "off")])
def test_killing_the_runner_ends_every_rank(
    run: Run, torch_cache: Path, tmp_path: Path, nodes: str, mode: str
) -> None:
    """With the sandbox, the pid namespace ends them; without, the step's first process is
    told (TERM) and ends its process group: the ranks, which here ignore TERM, are killed
    after the runner's grace (5 s), not torchrun's own 30 s."""
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
    }
    name = f"orphans-{nodes}-{mode}"
    argv = ["train", "--name", name, *WITH_TORCH, "--nnodes", nodes, "--nproc-per-node", "2"]
    argv += ["--sandbox", mode]
    runner = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", *argv, str(JOBS / "torch_sleeper.py")],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = JobStore(tmp_path / "state")

    def all_ranks_up() -> bool:
        if not (store.dir(name) / "log.jsonl").exists():
            return False
        lines = [r for r in store.records(name) if r.get("line", "").startswith("pids ")]
        return len(lines) == 2 * int(nodes)

    try:
        wait_for(all_ranks_up, timeout=300)
        tag = store.load(name).tag
        everyone = tagged(tag)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        wait_for(lambda: not any(alive(p) for p in everyone), timeout=15)
        assert tagged(tag) == []
    finally:
        runner.kill()
        if store.dir(name).exists():  # whatever the test saw, nothing outlives it
            end_tree(store.load(name).tag, 0)


def test_eight_torchrun_jobs_started_at_once_all_meet(run: Run, store_dir: Path) -> None:
    """Each job's rendezvous is on a loopback address of its own: no two can take one port."""
    names = [
        run("train", "--detach", *WITH_TORCH, "--torchrun", str(JOBS / "ddp_check.py")).stdout
        for _ in range(8)
    ]
    store = JobStore(store_dir)
    names = [n.strip() for n in names]
    for name in names:
        wait_for(lambda n=name: store.load(n).done, timeout=300)
    assert {n: store.load(n).status for n in names} == dict.fromkeys(names, "Complete")
    endpoints = {
        next(a for a in r["argv"] if a.startswith("--rdzv-endpoint="))
        for n in names
        for r in store.records(n)
        if r["event"] == "job.start"
    }
    assert len(endpoints) == 8
