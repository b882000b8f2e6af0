"""Standbys for `runner train`, held by the resident runner in spares (`runner.warm.served`):
the same command run twice takes a standby the second time, sees what a cold run sees, and
every fault (a spare, the server, the command killed; its env removed) leaves nothing."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runner.settings import RunnerSettings
from runner.spec import open_cache
from runner.warm.imports import HEAVY_MS
from tests.runner.conftest import JOBS, TORCH
from tests.runner.test_process import wait_for
from tests.runner.test_server import (
    RUNNER,
    Run,
    alive,
    runner,
    server_pid,
    server_status,
    started,
)
from tests.runner.test_warm import _differences, _normal, fingerprint
from tests.wheelhouse import make_wheel


def standbys(environ: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server_status(environ).get("standbys", [])
    return found


def ready(environ: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    wait_for(lambda: any(s["ready"] for s in standbys(environ)), timeout=timeout)
    return standbys(environ)[0]


def record(run: Run, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(run("status", name, "--json").stdout)
    return found


def last_job(run: Run) -> dict[str, Any]:
    listed = json.loads(run("jobs", "--json").stdout)
    return record(run, max(listed, key=lambda j: j["created"])["name"])


def descendants(pid: int) -> list[int]:
    """Every live process under `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if alive(p)]


def tagged_with(tag: str) -> list[int]:
    from runner.process import tagged

    return tagged(tag)


def io_classes(pids: list[int]) -> set[int]:
    """The IO priority classes of every thread of these processes (3: idle)."""
    import ctypes

    get = {"x86_64": 252, "aarch64": 31}[os.uname().machine]  # ioprio_get
    libc = ctypes.CDLL(None)
    found = set()
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found.add(libc.syscall(get, 1, int(task.name)) >> 13)
    return found


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    script = tmp_path / "hello.py"
    script.write_text("import sys, tiny_pkg\nprint('hello', sys.argv[1:], flush=True)\n")
    return script


def test_runner_train_twice_takes_a_standby_the_second_time(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    first = run("train", "--with", "tiny-pkg", str(hello), "x")
    assert first.returncode == 0, first.stderr
    assert "(warm)" not in first.stderr and last_job(run).get("warm") is None
    spare = ready(environ)
    assert spare["preloaded"] == ["tiny_pkg"] and spare["rss"] > 0  # its own package
    assert io_classes(descendants(spare["pid"])) == {3}  # it warmed, and waits, at idle IO
    listed = run("server", "status")
    assert "standbys:  1" in listed.stdout and "ready" in listed.stdout, listed.stdout
    second = run("train", "--with", "tiny-pkg", str(hello), "x")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout == "hello ['x']\n"
    assert "(warm)" in second.stderr
    assert last_job(run)["warm"] == {"preloaded": ["tiny_pkg"]}
    ready(environ)  # the second left one for the third
    other = run("train", "--with", "tiny-pkg", str(hello), "y")  # another command: cold
    assert other.returncode == 0 and "(warm)" not in other.stderr
    assert last_job(run).get("warm") is None


def test_cold_and_warm_off_leave_no_standby(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--cold", "--with", "tiny-pkg", str(hello)).returncode == 0
    assert run("train", "--with", "tiny-pkg", str(hello), RUNNER_WARM="0").returncode == 0
    assert run("train", "--detach", "--with", "tiny-pkg", str(hello)).returncode == 0
    assert standbys(environ) == []
    assert "--cold" in run("train", "--help").stdout


def test_a_warm_cli_job_sees_what_a_cold_one_sees(
    environ: dict[str, str], tmp_path: Path, torch_cache: Path
) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(inspect.getsource(fingerprint) + "\n\nfingerprint()\n")
    environ = {
        **environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_NO_INDEX": "0",
        "RUNNER_FIND_LINKS": "",
    }
    run = runner(environ, tmp_path)
    argv = ("train", *(a for p in TORCH for a in ("--with", p)), str(probe))
    cold = run(*argv)
    assert cold.returncode == 0, cold.stderr
    cold_record = last_job(run)
    assert ready(environ, timeout=300)["preloaded"] == ["torch", "numpy"]
    warm = run(*argv)
    assert warm.returncode == 0, warm.stderr
    warm_record = last_job(run)
    assert warm_record["warm"] == {"preloaded": ["torch", "numpy"]}
    seen = json.loads(warm.stdout)
    want = json.loads(cold.stdout)
    normal_seen = _normal(seen, warm_record["name"], warm_record["tag"])
    normal_want = _normal(want, cold_record["name"], cold_record["tag"])
    assert normal_seen == normal_want, _differences(normal_seen, normal_want)
    assert set(want["modules"]) <= set(seen["modules"])
    assert not any(m == "runner" or m.startswith("runner.") for m in seen["modules"])
    assert seen["draws"] != want["draws"] and all(seen["fresh"])


def test_two_ranks_run_again_start_warm_and_a_rank_killed_in_standby_means_cold(
    environ: dict[str, str], tmp_path: Path, torch_cache: Path
) -> None:
    """A node of 2 ranks: its standby holds one per rank (`ranks.py`); a rank of it killed
    before the next run ends the whole standby, and that run starts cold."""
    environ = {
        **environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_NO_INDEX": "0",
        "RUNNER_FIND_LINKS": "",
    }
    run = runner(environ, tmp_path)
    argv = ("train", *(a for p in TORCH for a in ("--with", p)), "--nproc-per-node", "2")
    argv += (str(JOBS / "ddp_check.py"),)
    both = {f"[rank {r}] rank {r} of 2 sum 1" for r in range(2)}
    cold = run(*argv)
    assert cold.returncode == 0 and "(warm)" not in cold.stderr, cold.stderr
    assert set(cold.stdout.splitlines()) == both
    spare = ready(environ, timeout=300)
    assert spare["ranks"] == 2 and spare["preloaded"] == ["torch", "numpy"], spare
    assert "2 ranks, each preloaded torch, numpy" in run("server", "status").stdout
    warm = run(*argv)
    assert warm.returncode == 0 and "(warm)" in warm.stderr, warm.stderr
    assert set(warm.stdout.splitlines()) == both
    spare = ready(environ, timeout=300)
    ranks = [
        pid
        for pid in descendants(spare["pid"])
        if b"__standby__" in Path(f"/proc/{pid}/cmdline").read_bytes()
        and b"ranks.py" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    wait_for(lambda: standbys(environ) == [] or not any(alive(p) for p in ranks), timeout=30)
    third = run(*argv)
    assert third.returncode == 0 and "(warm)" not in third.stderr, third.stderr
    assert set(third.stdout.splitlines()) == both


def test_killing_the_server_ends_its_spares_and_their_standbys(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    spare = ready(environ)
    pid = server_pid(environ)
    assert pid is not None
    held = descendants(spare["pid"])
    assert held, "the spare holds its standby's processes"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(spare["pid"]) and not any(alive(p) for p in held), timeout=30)
    again = run("train", "--with", "tiny-pkg", str(hello))  # a fresh server: cold
    assert again.returncode == 0 and "(warm)" not in again.stderr, again.stderr
    reserved = list((Path(environ["RUNNER_STATE_DIR"]) / "jobs").glob("*/.reserved"))
    assert len(reserved) <= 1  # the killed spare's folder was swept; the new spare's may be


def test_a_killed_spare_or_standby_means_a_cold_start_never_a_hang(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    spare = ready(environ)
    os.kill(spare["pid"], signal.SIGKILL)
    wait_for(lambda: standbys(environ) == [], timeout=30)
    second = run("train", "--with", "tiny-pkg", str(hello))
    assert second.returncode == 0 and "(warm)" not in second.stderr, second.stderr
    assert second.stdout == "hello []\n"
    spare = ready(environ)
    for pid in descendants(spare["pid"]):  # the standby itself (its sandbox and python)
        with contextlib.suppress(ProcessLookupError):  # gone with its sandbox already
            os.kill(pid, signal.SIGKILL)
    third = run("train", "--with", "tiny-pkg", str(hello))
    assert third.returncode == 0, third.stderr
    assert third.stdout == "hello []\n" and "(warm)" not in third.stderr


def test_a_warm_job_whose_command_is_killed_ends_failed_and_leaves_nothing(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    sleeper = str(JOBS / "sleeper.py")
    done = run("train", "--timeout", "2", sleeper)  # cold; leaves a spare
    assert done.returncode != 0
    ready(environ)
    owner = started(environ, tmp_path, "train", "--timeout", "2", sleeper)
    wait_for(lambda: _newest_said(run, "ready"), timeout=60)
    job = last_job(run)
    assert job["warm"] is not None
    os.kill(job["owner"]["pid"], signal.SIGKILL)  # the spare that became the command
    _, err = owner.communicate(timeout=60)
    assert owner.returncode == 1 and "went away" in err
    reaped = json.loads(run("jobs", "--reap", "--json").stdout)
    assert [j["status"] for j in reaped if j["name"] == job["name"]] == ["Failed"]
    wait_for(lambda: tagged_with(job["tag"]) == [], timeout=30)


def _newest_said(run: Run, word: str) -> bool:
    """The newest job's output holds `word` (`runner jobs` lists the newest first)."""
    listed = json.loads(run("jobs", "--json").stdout)
    return bool(listed) and word in run("logs", listed[0]["name"], served=False).stdout


def test_removing_an_env_ends_its_standbys_first(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    spare = ready(environ)
    held = descendants(spare["pid"])
    removed = run("envs", "rm", spare["env"])
    assert removed.returncode == 0, removed.stderr
    assert standbys(environ) == []
    assert not alive(spare["pid"]) and not any(alive(p) for p in held)


def test_envs_gc_ends_the_standbys_of_the_envs_it_removes_and_only_those(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    other = tmp_path / "other.py"
    other.write_text("import other_pkg\nprint('other')\n")
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    assert run("train", "--with", "other-pkg", str(other)).returncode == 0
    wait_for(lambda: len(standbys(environ)) == 2 and all(s["ready"] for s in standbys(environ)))
    doomed, kept = standbys(environ)
    held = descendants(doomed["pid"])
    cache = Path(environ["RUNNER_CACHE_DIR"]) / "envs"
    (cache / doomed["env"] / "runner-env.json").unlink()  # damaged: gc always removes it
    swept = run("envs", "gc", "--max-size", "100G")
    assert swept.returncode == 0 and "removed 1 environment(s)" in swept.stdout, swept.stderr
    assert not (cache / doomed["env"]).exists()
    assert not alive(doomed["pid"]) and not any(alive(p) for p in held)
    assert [s["pid"] for s in standbys(environ)] == [kept["pid"]]  # the other env's stays


def test_an_env_removed_and_made_again_under_a_standby_is_not_the_standbys(
    environ: dict[str, str], tmp_path: Path, hello: Path, settings: RunnerSettings
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    spare = ready(environ)
    open_cache(settings).remove(spare["env"])  # behind the runner's back: no standby dropped
    again = run("train", "--with", "tiny-pkg", str(hello))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "hello []\n" and "(warm)" not in again.stderr
    assert last_job(run).get("warm") is None


def test_the_clients_limits_reach_the_job_served_warm_or_not(
    environ: dict[str, str], tmp_path: Path
) -> None:
    probe = tmp_path / "limits.py"
    probe.write_text(
        "import resource\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE), *resource.getrlimit("
        "resource.RLIMIT_STACK))\n"
    )

    def limited(served: bool) -> subprocess.CompletedProcess[str]:
        env = {**environ, **({} if served else {"RUNNER_SERVER": "0"})}
        shell = f'ulimit -S -n 321 && ulimit -S -s 4096 && exec {RUNNER} "$@"'
        return subprocess.run(
            ["bash", "-c", shell, "-", "train", str(probe)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )

    assert runner(environ, tmp_path)("jobs").returncode == 0  # its server: the usual limits
    alone = limited(served=False)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.split()[0] == "321" and alone.stdout.split()[2] == str(4096 * 1024)
    cold = limited(served=True)
    ready(environ)
    warm = limited(served=True)
    assert "(warm)" in warm.stderr, warm.stderr
    assert alone.stdout == cold.stdout == warm.stdout


def test_where_no_server_can_start_every_command_runs_in_process_the_same(
    environ: dict[str, str], tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")  # the server's folder cannot be made under a file
    env = {**environ, "RUNNER_STATE_DIR": str(blocked / "state")}
    run = runner(env, tmp_path)
    for args in (("--help",), ("status", "nosuch"), ("jobs", "--no-such-option")):
        served, alone = run(*args), run(*args, served=False)
        assert (served.returncode, served.stdout, served.stderr) == (
            alone.returncode,
            alone.stdout,
            alone.stderr,
        ), args
    assert not (blocked.parent / "state").exists()


def test_preload_names_what_the_next_runs_standby_imports(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    argv = ("train", "--preload", "tiny_pkg", "--with", "tiny-pkg", str(hello))
    assert run(*argv).returncode == 0
    assert ready(environ)["preloaded"] == ["tiny_pkg"]
    assert "preloaded tiny_pkg" in run("server", "status").stdout
    second = run(*argv)
    assert second.returncode == 0 and second.stdout == "hello []\n", second.stderr
    assert last_job(run)["warm"] == {"preloaded": ["tiny_pkg"]}
    missing = ("train", "--preload", "no_such_module", "--with", "tiny-pkg", str(hello))
    assert run(*missing).returncode == 0  # its standby's warm-up fails: it is gone
    wait_for(lambda: [s["preloaded"] for s in standbys(environ)] == [["tiny_pkg"]], timeout=60)
    again = run(*missing)
    assert again.returncode == 0 and "(warm)" not in again.stderr and again.stdout == "hello []\n"


def test_a_package_that_fails_to_import_is_not_preloaded_and_ends_no_standby(
    environ: dict[str, str], tmp_path: Path
) -> None:
    links = tmp_path / "links"
    make_wheel(links, "loud-pkg", "1.0", body="raise RuntimeError('not at import, please')\n")
    script = tmp_path / "quiet.py"
    script.write_text("import sys\nprint('loud_pkg' in sys.modules)\n")
    run = runner(environ, tmp_path)
    argv = ("train", "--find-links", str(links), "--with", "loud-pkg", str(script))
    assert run(*argv).stdout == "False\n"
    assert ready(environ)["preloaded"] == []  # it was tried, and left out
    warm = run(*argv)
    assert warm.returncode == 0 and "(warm)" in warm.stderr, warm.stderr
    assert warm.stdout == "False\n"  # the failed import left nothing in sys.modules
    assert last_job(run)["warm"] == {"preloaded": []}


def test_the_modules_that_import_slowly_are_measured_once_per_env_and_preloaded_alone(
    environ: dict[str, str], tmp_path: Path
) -> None:
    links = tmp_path / "links"
    make_wheel(links, "slow-pkg", "1.0", body="import time\ntime.sleep(0.4)\n")
    make_wheel(links, "quick-pkg", "1.0", body="")
    script = tmp_path / "both.py"
    script.write_text("import quick_pkg, slow_pkg\nprint('both')\n")
    run = runner(environ, tmp_path)
    argv = ("train", "--find-links", str(links), "--with", "slow-pkg", "--with", "quick-pkg")
    argv = (*argv, str(script))
    assert run(*argv).stdout == "both\n"
    assert ready(environ)["preloaded"] == ["quick_pkg", "slow_pkg"]  # all, to measure them
    (kept,) = (Path(environ["RUNNER_STATE_DIR"]) / "imports").iterdir()
    measured = json.loads(kept.read_text())["ms"]
    assert measured["slow_pkg"] >= 400 and measured["quick_pkg"] < HEAVY_MS, measured
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.parent.stat().st_mode & 0o777 == 0o700
    for _ in range(2):  # from now on: the slow one alone
        warm = run(*argv)
        assert warm.stdout == "both\n" and "(warm)" in warm.stderr, warm.stderr
        assert ready(environ)["preloaded"] == ["slow_pkg"]
    assert last_job(run)["warm"] == {"preloaded": ["slow_pkg"]}
    kept.write_text("{damaged")  # measured again; the standby serves as ever
    assert "(warm)" in run(*argv).stderr
    assert ready(environ)["preloaded"] == ["quick_pkg", "slow_pkg"]
    assert json.loads(kept.read_text())["ms"].keys() == measured.keys()


def test_the_next_runs_standby_starts_once_this_run_has_ended(
    environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "nap.py"
    script.write_text("import time\nprint('up', flush=True)\ntime.sleep(3)\n")
    run = runner(environ, tmp_path)
    owner = started(environ, tmp_path, "train", str(script))
    wait_for(lambda: _newest_said(run, "up"), timeout=60)
    assert standbys(environ) == []  # nothing warms beside the running job
    _, err = owner.communicate(timeout=60)
    assert owner.returncode == 0, err
    ready(environ)


def test_the_runner_killed_at_hand_over_leaves_a_failed_job_and_no_process(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    spare = ready(environ)
    for pid in descendants(spare["pid"]):  # the standby: it takes its job, runs no line of it
        os.kill(pid, signal.SIGSTOP)
    owner = started(environ, tmp_path, "train", "--with", "tiny-pkg", str(hello))
    try:
        wait_for(lambda: last_job(run).get("warm") is not None, timeout=60)
        job = last_job(run)
        assert job["status"] == "Running" and job["owner"]["pid"] == spare["pid"]
        os.kill(spare["pid"], signal.SIGKILL)  # the command, handing its job over
        out, err = owner.communicate(timeout=60)
    finally:
        owner.kill()
    assert owner.returncode == 1 and "went away" in err and out == "", err
    reaped = json.loads(run("jobs", "--reap", "--json").stdout)
    assert [j["status"] for j in reaped if j["name"] == job["name"]] == ["Failed"]
    wait_for(lambda: tagged_with(job["tag"]) == [], timeout=30)


def test_a_spare_that_does_not_take_its_command_in_time_never_runs_it_too(
    environ: dict[str, str], tmp_path: Path, hello: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("train", "--with", "tiny-pkg", str(hello)).returncode == 0
    spare = ready(environ)
    held = descendants(spare["pid"])
    os.kill(spare["pid"], signal.SIGSTOP)  # handed the command, it says nothing in time
    try:
        second = run("train", "--with", "tiny-pkg", str(hello))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(spare["pid"], signal.SIGCONT)
    assert second.returncode == 0 and second.stdout == "hello []\n", second.stderr
    assert "(warm)" not in second.stderr  # run by a fresh fork, cold
    wait_for(lambda: not alive(spare["pid"]), timeout=30)  # ended by the server: no 2nd run
    assert len(json.loads(run("jobs", "--json").stdout)) == 2
    wait_for(lambda: not any(alive(p) for p in held), timeout=30)  # and so did its standby
