"""Warm starts: a job from a standby sees what a cold job sees, draws its own random numbers,
and every fault (a standby killed, its owner killed, a race for one standby) ends true."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubeflow.trainer import CustomTrainer

from runner import cgroup
from runner.backend import LocalProcessBackend, LocalProcessBackendConfig
from runner.process import tagged
from runner.spec import open_cache
from runner.store import RESERVED, JobRecord, JobStore
from runner.warm import imports
from runner.warm.pool import Pool
from tests.conftest import UvSpy
from tests.runner.conftest import TORCH
from tests.runner.test_process import wait_for


def fingerprint() -> None:
    """What a job's code can see of how it was started, as JSON on one line."""
    import json
    import os
    import random
    import resource
    import sys
    from pathlib import Path

    def read(path):  # type: ignore[no-untyped-def]
        try:
            return Path(path).read_text()
        except OSError as exc:
            return f"unreadable: {exc.strerror}"

    main = sys.modules["__main__"]
    modules = sorted(sys.modules)
    status = {
        k: v.strip()
        for k, _, v in (line.partition(":") for line in read("/proc/self/status").splitlines())
        if k in {"Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "Seccomp_filters"}
        or k.startswith("Cap")
    }
    mounts = [
        " ".join(line.split()[3:5] + line.split(" - ")[1].split()[:1] + line.split()[5:6])
        for line in read("/proc/self/mountinfo").splitlines()
    ]
    limits = {
        name: resource.getrlimit(getattr(resource, name))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }
    cgroup_limits = {  # what the job's cgroup (v2, or v1's controllers) lets it see
        f"{folder}/{name}": read(f"{folder}/{name}").strip()
        for line in read("/proc/self/cgroup").splitlines()
        for folder in {
            f"/sys/fs/cgroup{line.split(':', 2)[2]}",
            f"/sys/fs/cgroup/{line.split(':', 2)[1]}{line.split(':', 2)[2]}",
        }
        for name in ("memory.max", "pids.max", "memory.limit_in_bytes", "cpu.cfs_quota_us")
        if Path(f"{folder}/{name}").exists()
    }
    abstract = None  # what the Landlock scope (or the network namespace) makes of a host socket
    if os.environ.get("PROBE_ABSTRACT"):
        import errno
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect("\0" + os.environ["PROBE_ABSTRACT"])
                abstract = "connected"
            except OSError as exc:
                abstract = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    import ctypes

    import numpy
    import torch

    get = {"x86_64": 252, "aarch64": 31}[os.uname().machine]  # ioprio_get
    libc = ctypes.CDLL(None)
    io = sorted({libc.syscall(get, 1, int(t.name)) for t in Path("/proc/self/task").iterdir()})

    # generators as a new process has them: seeded, nothing drawn yet
    first = float(torch.rand(1))
    torch.manual_seed(torch.initial_seed())
    fresh = [
        random.getstate()[1][-1],
        int(numpy.random.get_state()[2]),
        float(torch.rand(1)) == first,
    ]
    draws = [random.random(), float(numpy.random.rand()), float(torch.rand(1))]
    model = torch.nn.Linear(8, 1)  # the standby's warm-up, done here: what it imports
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.mse_loss(model(torch.randn(4, 8)), torch.randn(4, 1)).backward()
    optimizer.step()
    print(
        json.dumps(
            {
                "status": status,
                "mounts": mounts,
                "environ": dict(os.environ),
                "cwd": str(Path.cwd()),
                "argv": sys.argv,
                "path": sys.path,
                "flags": str(sys.flags),
                "main": sorted(vars(main)),
                "main_file": getattr(main, "__file__", None),
                "fds": sorted(p.name for p in Path("/proc/self/fd").iterdir()),
                "limits": limits,
                "cgroup": read("/proc/self/cgroup"),
                "cgroup_limits": cgroup_limits,
                "host_abstract_socket": abstract,
                "umask": os.umask(0o22),
                "nice": sorted(  # of every thread (a standby warmed at nice 19)
                    {
                        int(
                            Path(f"/proc/self/task/{t.name}/stat")
                            .read_text()
                            .split(")")[-1]
                            .split()[16]
                        )
                        for t in Path("/proc/self/task").iterdir()
                    }
                ),
                "io_priorities": io,  # of every thread (a standby's warmed at idle)
                "cpus": sorted(  # of every thread (a standby's pinned at hand-over)
                    {
                        tuple(sorted(os.sched_getaffinity(int(t.name))))
                        for t in Path("/proc/self/task").iterdir()
                    }
                ),
                "threads": len(list(Path("/proc/self/task").iterdir())),
                "modules": modules,
                "after_warmup": sorted(sys.modules),
                "draws": draws,
                "fresh": fresh,
            }
        )
    )


def _probe(
    backend: LocalProcessBackend, env: dict[str, str] | None = None
) -> tuple[str, dict[str, Any]]:
    name = backend.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(func=fingerprint, packages_to_install=TORCH, env=env),
    )
    backend._threads[name].join(timeout=300)
    record = backend.store.load(name)
    assert record.status == "Complete", (record.reason, _lines(backend, name))
    (line,) = [x for x in _lines(backend, name) if x.startswith("{")]
    return name, json.loads(line)


def _lines(backend: LocalProcessBackend, name: str, rank: int | None = None) -> list[str]:
    """The job's lines (of one rank), each whole (a line longer than 64 KiB comes in pieces)."""
    lines, going_on, kept = [], False, True
    for r in backend.store.records(name):
        if r["event"] != "output" or r["stream"] != "stdout":
            continue
        if going_on:  # the line's next piece: it carries no rank
            if kept:
                lines[-1] += r["line"]
        else:
            kept = rank is None or r.get("rank") == rank
            if kept:
                lines.append(r["line"])
        going_on = bool(r.get("partial"))
    return lines


def _ready(backend: LocalProcessBackend, timeout: float = 120) -> None:
    wait_for(lambda: any(s["ready"] for s in backend.standbys()), timeout=timeout)


def _normal(fp: dict[str, Any], name: str, tag: str) -> dict[str, Any]:
    """The fingerprint with what differs between any two jobs (their names, a port) as
    placeholders, and what the warm-up may add (modules) and random draws left out."""
    text = json.dumps(
        {k: v for k, v in fp.items() if k not in {"modules", "after_warmup", "draws"}}
    )
    text = text.replace(tag, "TAG").replace(name, "NAME")
    out: dict[str, Any] = json.loads(text)
    for key in ("MASTER_PORT", "MASTER_ADDR"):
        out["environ"].pop(key, None)
    out["mounts"] = [re.sub(r"\b(mode|size|nr_inodes)=[^,\s]*", "", m) for m in out["mounts"]]
    return out


def _differences(seen: dict[str, Any], want: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(seen) | set(want)):
        a, b = seen.get(key), want.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [
                f"{key}.{k}: {a.get(k)!r} != {b.get(k)!r}"
                for k in set(a) | set(b)
                if a.get(k) != b.get(k)
            ]
        elif isinstance(a, list) and isinstance(b, list) and a != b:
            only_warm, only_cold = [x for x in a if x not in b], [x for x in b if x not in a]
            out.append(f"{key}: warm only {only_warm}, cold only {only_cold}")
        elif a != b:
            out.append(f"{key}: {a!r} != {b!r}")
    return out


def _same_start(
    backend: LocalProcessBackend,
    cold: tuple[str, dict[str, Any]],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A warm job's fingerprint, checked against a cold one's."""
    _ready(backend)
    name, warm = _probe(backend, env)
    record = backend.store.load(name)
    assert record.warm is not None and record.warm.preloaded in (["torch", "numpy"], ["torch"])
    if record.warm.preloaded == ["torch"]:  # a later standby: numpy was measured as quick
        assert record.env_key is not None
        env = open_cache(backend.cfg).get(record.env_key).path
        measured = imports.measured(backend.cfg.state_dir, env)
        assert measured is not None and measured["numpy"] < imports.HEAVY_MS, measured
    cold_record = backend.store.load(cold[0])
    assert cold_record.warm is None
    seen, want = _normal(warm, name, record.tag), _normal(cold[1], cold[0], cold_record.tag)
    assert seen == want, _differences(seen, want)
    # the modules: all a cold job has at its start, and nothing the warm-up would not load
    assert set(cold[1]["modules"]) <= set(warm["modules"])
    assert set(warm["modules"]) <= set(cold[1]["after_warmup"]) | set(cold[1]["modules"])
    assert not any(m == "runner" or m.startswith("runner.") for m in warm["modules"])
    return warm


@pytest.mark.parametrize("cpus", [1, 2])
def test_a_warm_node_on_cores_of_its_own_sees_what_a_cold_one_sees_in_each_rank(
    warm_cfg: LocalProcessBackendConfig, cpus: int
) -> None:
    """`cpu: N` gives N ranks on N cores of the job's own: a node of N standbys
    (`ranks.py`), pinned at hand-over to the cores the job was leased (the standbys
    warm on the last cores; a cold job of 1 core is leased the first)."""
    backend = LocalProcessBackend(warm_cfg)

    def probe() -> tuple[str, list[dict[str, Any]]]:
        trainer = CustomTrainer(
            func=fingerprint, packages_to_install=TORCH, resources_per_node={"cpu": cpus}
        )
        name = backend.train(runtime="torch-distributed", trainer=trainer)
        record = _done(backend, name)
        assert record.status == "Complete", (record.reason, _lines(backend, name))
        prints = [[x for x in _lines(backend, name, r) if x.startswith("{")] for r in range(cpus)]
        assert [len(p) for p in prints] == [1] * cpus, prints
        return name, [json.loads(p[0]) for p in prints]

    cold = probe()
    cold_record = backend.store.load(cold[0])
    assert cold_record.warm is None and len(cold_record.cpus) == cpus
    _ready(backend)
    name, warm = probe()
    record = backend.store.load(name)
    assert record.warm is not None, [r for r in backend.store.records(name) if "cold" in r["event"]]
    for rank in range(cpus):
        assert cold[1][rank]["cpus"] == [cold_record.cpus], cold[1][rank]["cpus"]
        assert warm[rank]["cpus"] == [record.cpus], warm[rank]["cpus"]
        assert warm[rank]["environ"]["RANK"] == str(rank)
        seen = _normal(warm[rank], name, record.tag)
        want = _normal(cold[1][rank], cold[0], cold_record.tag)
        seen.pop("cpus"), want.pop("cpus")  # the cores each was leased, checked above
        assert seen == want, _differences(seen, want)
    draws = [tuple(fp["draws"]) for fp in (*cold[1], *warm)]
    assert len(set(draws)) == len(draws), draws  # no two ranks, no two jobs share a stream


@pytest.fixture
def warm_cfg(torch_cache: Path, tmp_path: Path, uv_spy: UvSpy) -> LocalProcessBackendConfig:
    return LocalProcessBackendConfig(
        cache_dir=torch_cache, state_dir=tmp_path / "state", uv=str(uv_spy.path), cancel_grace=1
    )


MODES = {
    "default": {},
    "no-network, a mount, limits": {
        "network": False,
        "mounts": ["/etc/hostname:/tmp/host:ro"],
        "memory_limit": "3G",
        "open_files_limit": 512,
        "cpu_time_limit": 600,
        # held by a cgroup where one can be made; as an rlimit, see the test below
        **({"processes_limit": 4000} if cgroup.available("pids") else {}),
    },
    "strict": {"sandbox": "strict"},
    "off": {"sandbox": "off"},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_a_warm_job_sees_what_a_cold_job_sees(
    warm_cfg: LocalProcessBackendConfig, mode: str
) -> None:
    backend = LocalProcessBackend(warm_cfg.model_copy(update=MODES[mode]))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as host:  # a host's abstract socket
        env = {"PROBE_ABSTRACT": f"sandbox-runner-probe-{os.getpid()}-{mode}"}
        host.bind("\0" + env["PROBE_ABSTRACT"])
        host.listen()
        cold = _probe(backend, env)
        warm = _same_start(backend, cold, env)
        # two jobs never share a random stream: not the cold one's, not each other's
        again = _same_start(backend, cold, env)
    if mode == "off":
        assert cold[1]["host_abstract_socket"] == "connected"
    draws = [tuple(fp["draws"]) for fp in (cold[1], warm, again)]
    for i in range(3):
        assert len({d[i] for d in draws}) == 3, draws


def test_a_warm_job_starts_in_milliseconds_and_says_so_in_its_record(
    warm_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(warm_cfg)
    _probe(backend)
    _ready(backend)
    name, _fp = _probe(backend)
    starts = [r for r in backend.store.records(name) if r["event"] == "job.start"]
    assert starts[0]["warm"] is True and starts[0]["preloaded"] == ["torch", "numpy"]
    _ready(backend)
    (listed,) = backend.standbys()  # its replacement: torch, and numpy if it imports slowly
    env_key = backend.store.load(name).env_key
    assert env_key is not None
    measured = imports.measured(warm_cfg.state_dir, open_cache(warm_cfg).get(env_key).path)
    assert measured is not None and measured.keys() == {"numpy"}, measured
    heavy = ["numpy"] if measured["numpy"] >= imports.HEAVY_MS else []
    assert listed["preloaded"] == ["torch", *heavy] and listed["rss"] > 50 << 20, listed


@pytest.mark.skipif(cgroup.available("pids"), reason="a cgroup holds the process limit here")
def test_a_process_limit_held_by_an_rlimit_starts_every_job_cold(
    warm_cfg: LocalProcessBackendConfig,
) -> None:
    """RLIMIT_NPROC is set from the user's process count as a job starts: a standby's would
    not be its job's, so such jobs leave no standby."""
    backend = LocalProcessBackend(warm_cfg.model_copy(update={"processes_limit": 4000}))
    _probe(backend)
    time.sleep(2)
    assert backend.standbys() == []
    name, _fp = _probe(backend)
    assert backend.store.load(name).warm is None


def test_warm_off_starts_every_job_cold(warm_cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(warm_cfg.model_copy(update={"warm": False}))
    _probe(backend)
    time.sleep(1)
    assert backend.standbys() == []
    name, _fp = _probe(backend)
    assert backend.store.load(name).warm is None


def hello() -> None:
    print("hello")


def nap() -> None:
    import time

    print("napping", flush=True)
    time.sleep(120)


def _run(backend: LocalProcessBackend, func: Any = hello) -> str:
    return backend.train(
        runtime="torch-distributed", trainer=CustomTrainer(func=func, packages_to_install=TORCH)
    )


def _done(backend: LocalProcessBackend, name: str) -> JobRecord:
    backend._threads[name].join(timeout=300)
    return backend.store.load(name)


def _the_standby(backend: LocalProcessBackend) -> tuple[str, str]:
    """(name, tag) of the one standby `backend` keeps."""
    (standby,) = backend._warm._ready.values()
    return standby.name, standby.tag


def test_a_killed_standby_is_dropped_and_the_job_runs_cold_saying_why(
    warm_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(warm_cfg)
    assert _done(backend, _run(backend)).status == "Complete"
    _ready(backend)
    standby, tag = _the_standby(backend)
    for pid in tagged(tag):
        with contextlib.suppress(ProcessLookupError):  # gone with its sandbox already
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: tagged(tag) == [])
    name = _run(backend)
    record = _done(backend, name)
    assert record.status == "Complete" and record.warm is None
    (cold,) = [r for r in backend.store.records(name) if r["event"] == "job.cold"]
    assert cold["why"].startswith("the standby ended")
    assert not backend.store.dir(standby).exists()  # its folder went with it


def test_two_jobs_racing_for_one_standby_one_gets_it(warm_cfg: LocalProcessBackendConfig) -> None:
    backend = LocalProcessBackend(warm_cfg)
    _done(backend, _run(backend))
    _ready(backend)
    names: list[str] = []
    start = threading.Barrier(2)

    def submit() -> None:
        start.wait()
        names.append(_run(backend))

    racers = [threading.Thread(target=submit) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    records = [_done(backend, name) for name in names]
    assert [r.status for r in records] == ["Complete", "Complete"]
    assert sorted(r.warm is not None for r in records) == [False, True]


def test_a_warm_job_killed_ends_failed_and_leaves_nothing(
    warm_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(warm_cfg)
    _done(backend, _run(backend))
    _ready(backend)
    name = _run(backend, nap)
    wait_for(lambda: "napping" in _lines(backend, name))
    tag = backend.store.load(name).tag
    for pid in tagged(tag):
        if Path(f"/proc/{pid}/comm").read_text().strip() != "bwrap":
            os.kill(pid, signal.SIGKILL)  # the job's own process: the standby it was
    record = _done(backend, name)
    assert record.status == "Failed" and record.warm is not None
    assert record.reason in ("node-0 exited with code -9", "node-0 exited with code 137")
    wait_for(lambda: tagged(tag) == [])


OWNER = """
import json, sys, time
from kubeflow.trainer import CustomTrainer
from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

def hello():
    print("hello")

backend = LocalProcessBackend(LocalProcessBackendConfig.model_validate_json(sys.argv[1]))
name = backend.train(
    runtime="torch-distributed",
    trainer=CustomTrainer(func=hello, packages_to_install=json.loads(sys.argv[2])),
)
backend._threads[name].join()
while not any(s["ready"] for s in backend.standbys()):
    time.sleep(0.05)
(standby,) = backend._warm._ready.values()
print(json.dumps([standby.name, standby.tag]), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sandbox", ["auto", "off"])
def test_killing_the_owner_ends_its_standbys_and_the_next_pool_sweeps_their_folders(
    warm_cfg: LocalProcessBackendConfig, tmp_path: Path, sandbox: str
) -> None:
    cfg = warm_cfg.model_copy(update={"sandbox": sandbox})
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    with subprocess.Popen(
        [sys.executable, str(script), cfg.model_dump_json(), json.dumps(TORCH)],
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            standby, tag = json.loads(owner.stdout.readline())
            assert tagged(tag)
        finally:
            owner.kill()  # kill -9: no exit handler runs
            owner.wait()
    wait_for(lambda: tagged(tag) == [], timeout=30)
    store = JobStore(cfg.state_dir)
    assert (store.dir(standby) / RESERVED).exists()  # left by the killed owner
    Pool(store, cfg)
    assert not store.dir(standby).exists()
    assert [r.name for r in store.jobs()] == [r.name for r in store.jobs() if r.done]


def test_an_env_removed_under_its_standby_drops_the_standby_never_a_job_in_it(
    warm_cfg: LocalProcessBackendConfig, tmp_path: Path
) -> None:
    """`envs rm` of a standby's env is not refused (a standby is no job), and the standby
    is never handed a job: the next job builds the env anew and starts cold."""
    import shutil

    cfg = warm_cfg.model_copy(update={"cache_dir": tmp_path / "copy"})
    shutil.copytree(warm_cfg.cache_dir, cfg.cache_dir, symlinks=True)  # ours to remove
    backend = LocalProcessBackend(cfg)
    first = _run(backend)
    _done(backend, first)
    _ready(backend)
    standby, _tag = _the_standby(backend)
    cache = open_cache(cfg)
    env = backend.store.load(first).env_key
    assert env is not None
    for layer in [e for e in cache.ready() if e.meta.base_env]:  # other tests' layers over it
        cache.remove(layer.key)
    cache.remove(env)
    wait_for(lambda: not backend.store.dir(standby).exists(), timeout=30)  # dropped
    assert backend.standbys() == []
    record = _done(backend, _run(backend))
    assert record.status == "Complete" and record.warm is None


def test_a_preload_that_cannot_be_imported_ends_its_standby_and_the_next_job_says_so(
    warm_cfg: LocalProcessBackendConfig,
) -> None:
    backend = LocalProcessBackend(warm_cfg.model_copy(update={"preload": ["no_such_module"]}))
    assert _done(backend, _run(backend)).status == "Complete"
    (standby,) = backend._warm._ready.values()
    wait_for(lambda: standby.proc.poll() is not None, timeout=60)
    name = _run(backend)
    record = _done(backend, name)
    assert record.status == "Complete" and record.warm is None
    (cold,) = [r for r in backend.store.records(name) if r["event"] == "job.cold"]
    assert cold["why"].startswith("the standby ended (code 3): sandbox-runner: the standby's")
    assert "No module named 'no_such_module'" in cold["why"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_while_a_standby_is_prepared_leaves_nothing_and_the_next_one_is_made(
    warm_cfg: LocalProcessBackendConfig, tmp_path: Path
) -> None:
    from runner.warm.pool import Request

    backend = LocalProcessBackend(warm_cfg.model_copy(update={"warm": False}))
    record = _done(backend, _run(backend))  # its env, for the standbys below
    assert record.status == "Complete" and record.env_key is not None
    env = open_cache(warm_cfg).get(record.env_key)
    state = tmp_path / "small"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    try:
        store = JobStore(state)
        filler = state / "filler"
        with filler.open("wb", buffering=0) as fh, pytest.raises(OSError, match="No space"):
            while True:
                fh.write(b"\0" * 4096)
        for i in range(100000):  # and every inode: not even a folder can be made
            try:
                (state / f"i{i}").mkdir()
            except OSError:
                break
        kept = set(state.iterdir())
        pool = Pool(store, warm_cfg)
        request = Request(record.spec, env.path, record.base_python)
        pool.replenish(request)
        wait_for(pool.empty, timeout=60)  # it tried, failed, and holds nothing
        assert pool.listing() == [] and set(state.iterdir()) == kept
        assert list(store.root.iterdir()) == []  # not even the folder it began
        filler.unlink()
        for folder in state.glob("i*"):
            folder.rmdir()
        pool.replenish(request)  # room again: the next one is made
        wait_for(lambda: any(s["ready"] for s in pool.listing()), timeout=120)
        pool.close()
        assert list(store.root.iterdir()) == []  # dropped: its folder went with it
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
