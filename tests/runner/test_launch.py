from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runner.launch import RANK_PREFIX, STORE_HOST, split_rank, steps
from runner.spec import FunctionEntry, JobSpec, ScriptEntry


def greet(name: str, times: int = 1, shout: bool = False) -> None:
    text = f"hello {name}" * times
    print(text.upper() if shout else text)


def test_function_entry_calls_func_with_keyword_arguments(tmp_path: Path) -> None:
    spec = JobSpec.create(entry=FunctionEntry.of(greet, {"name": "kf", "times": 2, "shout": True}))
    (step,) = steps(spec, Path(sys.executable).parent, tmp_path)
    argv = [sys.executable, *step.argv[1:]]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out == "HELLO KFHELLO KF\n"


def test_torch_steps_one_agent_per_node_sharing_one_rendezvous(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("")
    spec = JobSpec.create(
        entry=ScriptEntry(kind="script", target=str(script), argv=("--lr", "1")),
        requirements=["torch"],
        framework="torch",
        nproc_per_node=2,
        num_nodes=3,
    )
    made = steps(spec, Path("/env/bin"), tmp_path)
    assert [s.name for s in made] == ["node-0", "node-1", "node-2"]
    for node, step in enumerate(made):
        assert step.argv[0] == "/env/bin/torchrun"
        assert "--nnodes=3" in step.argv and "--nproc-per-node=2" in step.argv
        assert "--rdzv-backend=c10d" in step.argv and f"--rdzv-id={spec.name}" in step.argv
        assert f"--rdzv-conf=is_host={int(node == 0)}" in step.argv  # node-0 hosts the store
        assert step.argv[-3:] == (str(script), "--lr", "1")
    endpoints = {a for s in made for a in s.argv if a.startswith("--rdzv-endpoint=")}
    assert len(endpoints) == 1
    host = endpoints.pop().removeprefix("--rdzv-endpoint=").rpartition(":")[0]
    net = host.removesuffix("1")
    assert host.startswith("127.") and host.endswith(".1") and not host.startswith("127.0.")
    addrs = [a for s in made for a in s.argv if a.startswith("--local-addr=")]
    assert addrs == [f"--local-addr={net}{n}" for n in (1, 2, 3)]  # node-0 hosts on its own


def _torch_spec(tmp_path: Path, **fields: object) -> JobSpec:
    """A torch job on an (empty) script."""
    script = tmp_path / "train.py"
    script.write_text("")
    return JobSpec.create(
        entry=ScriptEntry(kind="script", target=str(script)),
        requirements=["torch"],
        framework="torch",
        **fields,
    )


def test_jobs_meet_on_loopback_addresses_of_their_own(tmp_path: Path) -> None:
    """Each job meets on a loopback network of its own, `127.A.B.` drawn at random from
    254 * 256: two jobs starting at once share one (and so a port space) once in 65,024.
    (50 draws all distinct would fail 1 run in 50: the birthday bound, not a fault.)"""
    spec = _torch_spec(tmp_path)
    hosts = [
        next(a for a in steps(spec, Path("/env/bin"), tmp_path)[0].argv if "endpoint" in a)
        .split("=")[1]
        .rpartition(":")[0]
        for _ in range(200)
    ]
    assert all(re.fullmatch(r"127\.(\d+)\.(\d+)\.1", h) for h in hosts), hosts
    assert all(0 < int(h.split(".")[1]) < 255 and int(h.split(".")[2]) < 256 for h in hosts)
    assert len(set(hosts)) >= 195  # 200 draws: 0.3 repeats expected, 6 or more ~1e-7


def test_worker_lines_carry_their_global_rank() -> None:
    assert RANK_PREFIX.replace("${rank}", "13") == "[rank13]:"
    assert split_rank("[rank13]:loss 0.5") == (13, "loss 0.5")
    assert split_rank("[rank2]:") == (2, "")
    assert split_rank("W1124 torchrun's own warning") == (None, "W1124 torchrun's own warning")
    assert split_rank("[default0]:not our prefix") == (None, "[default0]:not our prefix")


def test_python_steps_and_modules(tmp_path: Path) -> None:
    spec = JobSpec.create(entry=ScriptEntry(kind="module", target="pkg.mod", argv=("x",)))
    (step,) = steps(spec, Path("/env/bin"), tmp_path)
    assert step.argv == ("/env/bin/python", "-m", "pkg.mod", "x")


def test_with_several_nodes_the_store_host_waits_for_the_others(tmp_path: Path) -> None:
    spec = _torch_spec(tmp_path, num_nodes=2)
    node0, node1 = steps(spec, Path("/env/bin"), tmp_path, hold_fd=7)
    assert node0.argv[:4] == ("/env/bin/python", "-c", STORE_HOST, "7")
    assert "--rdzv-conf=is_host=1" in node0.argv
    assert node1.argv[0] == "/env/bin/torchrun" and "--rdzv-conf=is_host=0" in node1.argv
    (single,) = steps(spec.model_copy(update={"num_nodes": 1}), Path("/env/bin"), tmp_path)
    assert single.argv[0] == "/env/bin/torchrun"


class _AbortsAtTeardown:
    """As gloo's threads can at interpreter exit: an object whose end kills the process."""

    def __del__(self, abort: Callable[[], None] = os.abort) -> None:
        abort()


def trains_then_teardown_aborts(steps: int) -> None:
    import atexit
    import threading
    import time

    global _kept  # noqa: PLW0603 - kept until the teardown, on purpose
    _kept = _AbortsAtTeardown()  # freed only when the interpreter tears the module down
    atexit.register(print, "exit handler ran")
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread joined"))).start()
    print(f"trained {steps} steps")


def exits(code: object) -> None:
    raise SystemExit(code)


def fails() -> None:
    raise ValueError("bad batch")


def _run_entry(tmp_path: Path, entry: FunctionEntry) -> subprocess.CompletedProcess[str]:
    (step,) = steps(JobSpec.create(entry=entry), Path(sys.executable).parent, tmp_path)
    argv = [sys.executable, *step.argv[1:]]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def test_a_function_that_returned_ends_the_process_before_the_teardown(tmp_path: Path) -> None:
    """Its threads are joined, its exit handlers run, its output flushed: then the process
    ends, and what the interpreter's teardown would do (abort, here) never comes."""
    entry = FunctionEntry.of(trains_then_teardown_aborts, {"steps": 3}).model_copy(
        update={
            "source": "import os\nfrom collections.abc import Callable\n\n"
            + _source(_AbortsAtTeardown)
            + _source(trains_then_teardown_aborts)
        }
    )
    done = _run_entry(tmp_path, entry)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "trained 3 steps\nthread joined\nexit handler ran\n"


def test_a_function_s_exit_code_and_exception_are_its_process_s(tmp_path: Path) -> None:
    assert _run_entry(tmp_path, FunctionEntry.of(exits, {"code": 3})).returncode == 3
    said = _run_entry(tmp_path, FunctionEntry.of(exits, {"code": "stopped early"}))
    assert (said.returncode, said.stderr) == (1, "stopped early\n")
    assert _run_entry(tmp_path, FunctionEntry.of(exits, {"code": None})).returncode == 0
    failed = _run_entry(tmp_path, FunctionEntry.of(fails))
    assert failed.returncode == 1
    assert failed.stderr.startswith("Traceback") and "ValueError: bad batch" in failed.stderr


def _source(obj: object) -> str:
    import inspect
    import textwrap

    return textwrap.dedent(inspect.getsource(obj)) + "\n\n"  # type: ignore[arg-type]
