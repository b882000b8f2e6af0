"""`ranks.py`, the program that starts one node's ranks without torchrun's agent, run for real
on plain python ranks: their lines tagged, their variables, how a node with a failed rank
ends, and the node's standby (real `warm/program.py` standbys, without torch)."""

from __future__ import annotations

import marshal
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runner import ranks
from runner.warm import program
from tests.runner.test_process import alive, wait_for

RANKS = str(Path(ranks.__file__))


def _node(tmp_path: Path, script: str, count: int = 2, grace: float = 1.0) -> subprocess.Popen[str]:
    (tmp_path / "rank.py").write_text(script)
    argv = [sys.executable, "-I", "-S", RANKS, str(grace), str(count), "cold", "--"]
    return subprocess.Popen(
        [*argv, sys.executable, str(tmp_path / "rank.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WORLD_SIZE": str(count)},
    )


def test_each_rank_gets_its_variables_and_its_lines_are_tagged(tmp_path: Path) -> None:
    node = _node(
        tmp_path,
        "import os, sys\n"
        "r = os.environ['RANK']\n"
        "print('rank', r, 'local', os.environ['LOCAL_RANK'], 'of', os.environ['WORLD_SIZE'])\n"
        "print('to stderr', r, file=sys.stderr)\n"
        "print('no newline', r, end='')\n",
        count=3,
    )
    out, err = node.communicate(timeout=30)
    assert node.returncode == 0, err
    assert sorted(out.splitlines()) == sorted(
        [f"[rank{r}]:rank {r} local {r} of 3" for r in range(3)]
        + [f"[rank{r}]:no newline {r}" for r in range(3)]
    )
    assert sorted(err.splitlines()) == [f"[rank{r}]:to stderr {r}" for r in range(3)]


def test_a_failed_rank_ends_the_others_and_the_node_exits_with_its_code(tmp_path: Path) -> None:
    """Rank 1 fails; rank 0 ignores TERM, so it is killed after the grace (1 s)."""
    node = _node(
        tmp_path,
        "import os, signal, sys, time\n"
        "if os.environ['RANK'] == '1':\n"
        "    time.sleep(0.5)\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, lambda *_: print('TERM ignored', flush=True))\n"
        "print('pid', os.getpid(), flush=True)\n"
        "time.sleep(60)\n",
    )
    began = time.monotonic()
    out, err = node.communicate(timeout=30)
    assert node.returncode == 3
    assert 1.0 <= time.monotonic() - began < 10
    assert "sandbox-runner: rank 1 exited with code 3; ending the other ranks" in err
    assert "[rank0]:TERM ignored" in out.splitlines()
    pid = int(next(x for x in out.splitlines() if x.startswith("[rank0]:pid")).split()[1])
    assert not alive(pid)


def test_a_rank_killed_by_a_signal_kills_the_node_with_it(tmp_path: Path) -> None:
    node = _node(
        tmp_path,
        "import os, signal, time\n"
        "if os.environ['RANK'] == '0':\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "time.sleep(60)\n",
    )
    node.communicate(timeout=30)
    assert node.returncode == -signal.SIGKILL


def test_term_goes_on_to_every_rank(tmp_path: Path) -> None:
    node = _node(
        tmp_path,
        "import os, signal, sys, time\n"
        "def bye(*_):\n"
        "    print('saving', os.environ['RANK'], flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n",
    )
    assert node.stdout is not None
    up = [node.stdout.readline(), node.stdout.readline()]
    assert sorted(up) == ["[rank0]:up\n", "[rank1]:up\n"]
    node.send_signal(signal.SIGTERM)
    out, err = node.communicate(timeout=30)
    assert node.returncode == 0
    assert sorted(out.splitlines()) == ["[rank0]:saving 0", "[rank1]:saving 1"]
    assert err == ""


def test_ranks_that_end_because_the_node_was_told_to_end_fail_nothing_aloud(
    tmp_path: Path,
) -> None:
    """Cancelled (TERM), its ranks die of it: the node dies of it too, and says nothing of
    a failed rank (the runner says the job was cancelled)."""
    node = _node(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    assert node.stdout is not None
    assert sorted([node.stdout.readline(), node.stdout.readline()]) == [
        "[rank0]:up\n",
        "[rank1]:up\n",
    ]
    node.send_signal(signal.SIGTERM)
    _, err = node.communicate(timeout=30)
    assert node.returncode == -signal.SIGTERM
    assert err == ""


def _standby_node(count: int = 2) -> tuple[subprocess.Popen[str], int, int]:
    control, ready = os.pipe(), os.pipe()
    argv = [sys.executable, "-I", "-S", RANKS, "1", str(count), "warm"]
    node = subprocess.Popen(
        [*argv, str(control[0]), str(ready[1]), program.source(), "0", "?json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=(control[0], ready[1]),
    )
    os.close(control[0])
    os.close(ready[1])
    return node, control[1], ready[0]


def test_a_standby_node_is_ready_once_every_rank_is_and_hands_each_its_rank(
    tmp_path: Path,
) -> None:
    node, control, ready = _standby_node()
    said = os.read(ready, 1 << 16)
    os.close(ready)
    assert said.startswith(b"rjson="), said
    (tmp_path / "job.py").write_text(
        "import os, sys\n"
        "print(os.environ['RANK'], os.environ['JOB'], sys.argv[1:], os.getcwd(), __name__)\n"
    )
    job = {
        "argv": [
            *("python", "-I", "-S", "ranks.py", "1", "2", "cold", "--"),
            *(sys.executable, str(tmp_path / "job.py"), "--epochs", "1"),
        ],
        "env": {"JOB": "the job's", "PATH": os.environ["PATH"]},
        "cwd": str(tmp_path),
    }
    os.write(control, marshal.dumps(job, 4))
    os.close(control)
    out, err = node.communicate(timeout=30)
    assert node.returncode == 0, err
    assert sorted(out.splitlines()) == [
        f"[rank{r}]:{r} the job's ['--epochs', '1'] {tmp_path} __main__" for r in range(2)
    ]


def test_a_standby_node_let_go_ends_with_its_ranks(tmp_path: Path) -> None:
    node, control, ready = _standby_node()
    assert os.read(ready, 1).startswith(b"r")
    os.close(control)
    node.communicate(timeout=30)
    assert node.returncode == 0


def test_a_standby_rank_that_dies_before_its_job_ends_the_whole_node() -> None:
    """Never half a node: the runner sees the standby ended, and the job starts cold."""
    node, control, ready = _standby_node()
    assert os.read(ready, 1).startswith(b"r")
    children = [
        int(p) for p in Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
    ]
    assert len(children) == 2
    os.kill(children[1], signal.SIGKILL)
    node.communicate(timeout=30)
    assert node.returncode == 3
    wait_for(lambda: not alive(children[0]), timeout=10)
    os.close(control)
    os.close(ready)
