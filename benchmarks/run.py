"""`python -m benchmarks`: the runner beside the original way and `uv run --with`, in one run.

Everything runs on this machine, in a fresh scratch folder, with the same
package sources for every contender (pip's configuration for the original,
the same indexes and find-links passed to uv). Each figure is a median over
repetitions, with min and max; the ratios in the report come from this run
only. Nothing here asserts a time: a missed target is reported, not hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import original
from benchmarks.jobs import all_reduce, busy, get_torch_dist, train_model, trivial
from benchmarks.measure import disk_usage, repeat, run, stats, timed
from envs import EnvCache, EnvSpec
from envs.builder import connection_environ, default_uv, index_args
from envs.requirements import parse_all

NUMPY = ["numpy"]
TORCH = ["torch==2.13.0", "numpy"]
TORCH_RESPELLED = ["NumPy", "Torch==2.13.0"]
SMALL = [  # pure-Python packages, one per set that otherwise shares torch
    "six", "idna", "attrs", "packaging", "pyparsing", "tomli", "toml", "colorama",
    "click", "pytz", "certifi", "urllib3", "wheel", "decorator", "tqdm", "typing-extensions",
]  # fmt: skip
CONCURRENT_SETS = {1: "six", 4: "idna", 16: "attrs"}
RUNNER = str(Path(sys.executable).parent / "runner")
JOBS_LISTED = 100
"""`runner jobs` is timed over this many job records."""
MANY_JOBS = 10_000
SERVER_COMMANDS = 1_000
"""And over this many: its newest page only is read."""


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, root: Path, reps: int, quick: bool = False) -> None:
        self.root = root
        self.reps = reps
        self.many_jobs = MANY_JOBS // 10 if quick else MANY_JOBS
        """Records `runner jobs` pages over (a smoke run: a tenth, the same code)."""
        self.server_commands = SERVER_COMMANDS // 10 if quick else SERVER_COMMANDS
        """Commands the resident runner serves before its memory is read again."""
        os.environ["RUNNER_STATE_DIR"] = str(root / "state")  # for the `runner` processes too
        os.environ["RUNNER_CACHE_DIR"] = str(root / "cache")
        from runner.settings import RunnerSettings

        self.settings = RunnerSettings(cache_dir=root / "cache", state_dir=root / "state")
        self.cache = EnvCache(self.settings.cache_dir)
        self.script = root / "trivial.py"
        self.script.write_text("print('ok')\n")
        self.pip_cache = root / "pip-cache"
        """The original's download cache when it is warm (one of its own, not the user's)."""

    def without_bases(self) -> EnvCache:
        """A second cache sharing this one's warm uv cache and bytecode store, but none of its
        envs: a new set there is a full env (here it may be a layer over a cached subset)."""
        other = self.root / "full-envs"
        if not other.exists():
            other.mkdir()
            for shared in ("uv", "objects"):
                (self.cache.root / shared).mkdir(exist_ok=True)
                (other / shared).symlink_to(self.cache.root / shared)
        return EnvCache(other)

    def uv_environ(self) -> dict[str, str]:
        """`uv run --with`'s environment: this cache's uv cache, and the CA bundle and other
        connection settings our own uv calls get."""
        return {
            **os.environ,
            **connection_environ(self.spec(TORCH).index),
            "UV_CACHE_DIR": str(self.cache.root / "uv"),
            "UV_NO_CONFIG": "1",
        }

    def spec(self, packages: list[str]) -> EnvSpec:
        from runner.spec import env_spec

        return env_spec(self.settings, parse_all(packages))

    # -- whole processes, as a user types them -------------------------------------

    def runner_train(
        self, packages: list[str], environ: dict[str, str] | None = None, *options: str
    ) -> str:
        """`runner train --with P... trivial.py`: one whole process, as from the shell; what
        it said on stderr."""
        with_args = [arg for req in packages for arg in ("--with", req)]
        argv = [RUNNER, "train", *options, *with_args, str(self.script)]
        return run(argv, env=environ or os.environ.copy()).stderr

    def standby_ready(self, since: float) -> None:
        """Wait for the standby the `runner train` started at `since` (time.monotonic) left:
        one born after it (another command's may be there, and ready, already)."""
        deadline = time.monotonic() + 120
        while not any(
            s["ready"] and s["age"] < time.monotonic() - since
            for s in self._server().get("standbys", [])
        ):
            assert time.monotonic() < deadline, "no standby became ready"
            time.sleep(0.05)

    def original_job(self, packages: list[str], pip_cache: Path) -> None:
        """The original way for one job: a new venv, pip install, then the script."""
        original.build_and_run(self.root, packages, self.script, pip_cache)

    # -- 1. cold -------------------------------------------------------------------

    def cold(self, packages: list[str]) -> dict[str, Any]:
        """A new set, whole process, script run included: every cache of each side empty,
        then each side's download caches warm (pip's; uv's and the runner's bytecode store)."""
        counter = iter(range(10**6))

        def fresh(kind: str) -> Path:
            return self.root / f"{kind}-{next(counter)}"

        def empty_pip() -> None:
            pip_cache = fresh("pip-cache")
            try:
                self.original_job(packages, pip_cache)
            finally:
                shutil.rmtree(pip_cache, ignore_errors=True)

        def empty_runner() -> None:
            cache = fresh("runner-cache")
            try:
                self.runner_train(
                    packages, {**os.environ, "RUNNER_CACHE_DIR": str(cache)}, "--cold"
                )
            finally:
                shutil.rmtree(cache, ignore_errors=True)

        log(f"cold {packages}: original (venv + ensurepip + pip install), pip cache empty")
        orig_empty = repeat(self.reps, empty_pip)
        log(f"cold {packages}: runner train, its caches empty")
        runner_empty = repeat(self.reps, empty_runner)
        log(f"cold {packages}: original, pip's cache warm")
        self.original_job(packages, self.pip_cache)
        orig_warm = repeat(self.reps, lambda: self.original_job(packages, self.pip_cache))
        log(f"cold {packages}: runner train, uv's cache and the bytecode store warm")
        spec = self.spec(packages)
        self.runner_train(packages)

        def forget() -> None:
            env = self.cache.lookup(spec)
            if env is not None:
                self.cache.remove(env.key)

        runner_warm = repeat(
            self.reps, lambda: self.runner_train(packages, None, "--cold"), setup=forget
        )
        forget()  # a later set would be a layer over it: each new set here starts with none
        return {
            "original_cache_empty": orig_empty,
            "runner_cache_empty": runner_empty,
            "original_cache_warm": orig_warm,
            "runner_cache_warm": runner_warm,
            "speedup_empty": orig_empty["median"] / runner_empty["median"],
            "speedup_warm": orig_warm["median"] / runner_warm["median"],
        }

    # -- 2. the second job of a set -------------------------------------------------

    def second_job(self, original_rebuild: dict[str, Any]) -> dict[str, Any]:
        """The same set again (respelled), whole process: `runner train` (cache hit) against
        `uv run --with` (uv's env cache warm), the env's python run directly, and the
        original (which rebuilds for every job: its figure with pip's cache warm)."""
        log("second job: runner train, same set respelled (cache hit), --cold and warm")
        self.runner_train(TORCH)
        reps = max(10, self.reps)
        runner_job = repeat(reps, lambda: self.runner_train(TORCH_RESPELLED, None, "--cold"))
        since = time.monotonic()
        self.runner_train(TORCH_RESPELLED)  # leaves a standby for the next one like it
        warm_times, warm_flags = [], []
        for _ in range(reps):  # each once the last one's standby is ready, as a person reads
            self.standby_ready(since)
            since = time.monotonic()
            started = time.perf_counter()
            said = self.runner_train(TORCH_RESPELLED)
            warm_times.append(time.perf_counter() - started)
            warm_flags.append("(warm)" in said)
        runner_warm = stats(warm_times)
        log("second job: uv run --with, its caches warm")
        uv_env = self.uv_environ()
        index = index_args(self.spec(TORCH).index)
        with_args = [arg for req in TORCH_RESPELLED for arg in ("--with", req)]
        uv_argv = [default_uv(), "run", "--no-project", *index, *with_args, "python"]
        run([*uv_argv, str(self.script)], env=uv_env)  # its own env cache, warm
        uv_job = repeat(reps, lambda: run([*uv_argv, str(self.script)], env=uv_env))
        env = self.cache.ensure(self.spec(TORCH))
        direct = repeat(reps, lambda: run([str(env.python), str(self.script)]))
        log("second job: the cache hit alone, in-process (EnvCache.ensure)")
        hit = repeat(50, lambda: self.cache.ensure(self.spec(TORCH_RESPELLED)))
        return {
            "original_rebuild": original_rebuild,
            "runner_train": runner_job,
            "runner_train_warm": runner_warm,
            "all_warm": all(warm_flags),
            "uv_run_with": uv_job,
            "direct": direct,
            "hit_in_process": hit,
            "speedup_vs_original": original_rebuild["median"] / runner_job["median"],
            "ratio_to_uv_run": runner_job["median"] / uv_job["median"],
            "warm_ratio_to_uv_run": runner_warm["median"] / uv_job["median"],
            "ratio_to_direct": runner_job["median"] / direct["median"],
        }

    # -- 3. torch jobs -------------------------------------------------------------

    def torch_jobs(self) -> dict[str, Any]:
        """Job wall time of a torch job: the SDK backend's train() to Complete (in a running
        Python) against the same entry under torchrun started from the shell."""
        result: dict[str, Any] = {}
        for ranks, func in ((1, trivial), (2, all_reduce)):
            log(f"torch: {ranks}-rank job, SDK backend vs torchrun directly")
            sdk, jobdir = self._sdk(func, ranks)
            torch_env = self.cache.ensure(self.spec(TORCH))
            argv = [
                str(torch_env.bin_dir / "torchrun"),
                "--standalone",
                f"--nproc-per-node={ranks}",
                str(jobdir / "entry.py"),
                str(jobdir / "args.json"),
            ]
            direct = repeat(self.reps, lambda argv=argv: run(argv, env=_torch_environ()))
            result[f"torch_{ranks}_sdk"] = sdk
            result[f"torch_{ranks}_direct"] = direct
            result[f"torch_{ranks}_ratio"] = sdk["median"] / direct["median"]
        return result

    # -- 4. the SDK's README example, end to end -------------------------------------

    def sdk_end_to_end(self) -> dict[str, Any]:
        """The Kubeflow SDK README's example (torch + numpy), `train()` to Complete, through
        the original LocalProcessBackend and through ours, alternating in this process: ours'
        first job with its caches empty, its second with them warm; the original makes its
        venv anew for every job."""
        from kubeflow.trainer import CustomTrainer
        from kubeflow.trainer.backends.localprocess.backend import (
            LocalProcessBackend as OriginalBackend,
        )
        from kubeflow.trainer.backends.localprocess.types import (
            LocalProcessBackendConfig as OriginalConfig,
        )

        from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

        # pip would take the newest torch (GBs of CUDA wheels): pin the one our runtime has
        # (the original starts its jobs with this environment alone, not the caller's)
        constraint = self.root / "constraints.txt"
        constraint.write_text("torch==2.13.0\n")
        trainer = CustomTrainer(
            func=get_torch_dist,
            packages_to_install=["numpy"],
            env={"PIP_CONSTRAINT": str(constraint)},
        )
        original_backend = OriginalBackend(OriginalConfig())
        cwd = Path.cwd()  # the original changes the process's folder for its jobs

        def original_job() -> None:
            name = original_backend.train(runtime="torch-distributed", trainer=trainer)
            job = original_backend.wait_for_job_status(name, timeout=1800)
            os.chdir(cwd)
            assert job.status == "Complete", list(original_backend.get_job_logs(name))

        times: dict[str, list[float]] = {"original": [], "first": [], "second": []}
        for rep in range(self.reps):
            cache = self.root / f"sdk-cache-{rep}"
            ours = LocalProcessBackend(
                LocalProcessBackendConfig(cache_dir=cache, state_dir=self.root / f"sdk-{rep}")
            )

            def our_job(ours: LocalProcessBackend = ours) -> None:
                name = ours.train(runtime="torch-distributed", trainer=trainer)
                job = ours.wait_for_job_status(name, polling_interval=0.01, timeout=1800)
                assert job.status == "Complete", list(ours.get_job_logs(name))

            log(f"SDK end to end, round {rep + 1}: original, ours (caches empty), original, ours")
            times["original"].append(timed(original_job))
            times["first"].append(timed(our_job))
            times["original"].append(timed(original_job))
            times["second"].append(timed(our_job))
            shutil.rmtree(cache, ignore_errors=True)
        orig, first, second = (stats(times[k]) for k in ("original", "first", "second"))
        return {
            "original": orig,
            "runner_first": first,
            "runner_second": second,
            "speedup_first": orig["median"] / first["median"],
            "speedup_second": orig["median"] / second["median"],
        }

    def warm_start(self) -> dict[str, Any]:
        """The SDK README's training example (`jobs.train_model`), `train()` to Complete, in
        one Python: the original backend; ours with the env cached and a new interpreter per
        job (RUNNER_WARM=0); ours from a standby, each job submitted once the standby the
        previous one left is ready (as when a person reads the loss before the next run).
        Then what a standby costs: its memory, and a job's own compute time with a standby
        warming beside it (on these 2 cores) against with none."""
        from kubeflow.trainer import CustomTrainer
        from kubeflow.trainer.backends.localprocess.backend import (
            LocalProcessBackend as OriginalBackend,
        )
        from kubeflow.trainer.backends.localprocess.types import (
            LocalProcessBackendConfig as OriginalConfig,
        )

        from runner.backend import LocalProcessBackend

        constraint = self.root / "constraints.txt"
        constraint.write_text("torch==2.13.0\n")
        original_backend = OriginalBackend(OriginalConfig())
        original_trainer = CustomTrainer(
            func=train_model, packages_to_install=["numpy"], env={"PIP_CONSTRAINT": str(constraint)}
        )
        trainer = CustomTrainer(func=train_model, packages_to_install=TORCH)
        cwd = Path.cwd()

        def original_job() -> None:
            name = original_backend.train(runtime="torch-distributed", trainer=original_trainer)
            job = original_backend.wait_for_job_status(name, timeout=1800)
            os.chdir(cwd)
            assert job.status == "Complete", list(original_backend.get_job_logs(name))

        times: dict[str, list[float]] = {"original": [], "cold": [], "warm": []}
        rss: list[int] = []
        warm_flags: list[bool] = []
        for rep in range(self.reps):
            log(f"warm start, round {rep + 1}: original; ours cold (env hit); ours from standbys")
            times["original"].append(timed(original_job))
            cold = LocalProcessBackend(self._sdk_config(False, rep))
            _sdk_job(cold, trainer)  # the env cached, the interpreter's files in the page cache
            times["cold"] += [_sdk_job(cold, trainer)[0] for _ in range(3)]
            warm = LocalProcessBackend(self._sdk_config(True, rep))
            _sdk_job(warm, trainer)  # the first job of a set starts cold; it leaves a standby
            for _ in range(3):
                _standby_ready(warm)
                seconds, name = _sdk_job(warm, trainer)
                times["warm"].append(seconds)
                warm_flags.append(warm.store.load(name).warm is not None)
            _standby_ready(warm)
            rss += [s["rss"] for s in warm.standbys()]
        beside = self._beside_a_standby()
        orig, cold_s, warm_s = (stats(times[k]) for k in ("original", "cold", "warm"))
        alone, next_to = stats(beside["alone"]), stats(beside["beside"])
        return {
            "original": orig,
            "runner_cold": cold_s,
            "runner_warm": warm_s,
            "all_warm": all(warm_flags),
            "speedup_cold": orig["median"] / cold_s["median"],
            "speedup_warm": orig["median"] / warm_s["median"],
            "standby_rss_bytes": stats([float(r) for r in rss]),
            "compute_alone": alone,
            "compute_beside_standby": next_to,
            "beside_ratio": next_to["median"] / alone["median"],
        }

    def launch_ranks(self) -> dict[str, Any]:
        """Two gloo ranks on one node, torchrun's agent against the ranks started directly
        (`benchmarks/agent.py`): whether the agent stays for jobs of several ranks."""
        from benchmarks import agent

        python = str(self.cache.ensure(self.spec(TORCH)).python)
        log("two ranks: torchrun's agent against the ranks started directly")
        return {"ranks": 2, **agent.measure(python, 2, max(5, self.reps * 2))}

    def ddp_ranks(self) -> dict[str, Any]:
        """The README's main job (`examples/train_ddp.py`, 2 gloo ranks) for 1 epoch, run
        again, whole process: from `runner train`'s start to both ranks' first line, and to its
        exit. From a standby (each run once the last one's is ready, as a person reads the
        loss), cold with the ranks started directly (`--cold`), and cold under torchrun's
        agent (`--cold --torchrun`); each kind in a block of its own, so that no standby
        warms beside a measured run."""
        script = Path(__file__).parent.parent / "examples" / "train_ddp.py"
        with_args = [arg for req in TORCH for arg in ("--with", req)]

        def once(*options: str) -> tuple[float, float, bool]:
            argv = [RUNNER, "train", *options, *with_args, "--nproc-per-node", "2", str(script)]
            started = time.perf_counter()
            proc = subprocess.Popen(
                [*argv, "--epochs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            assert proc.stdout is not None and proc.stderr is not None
            seen: dict[str, float] = {}
            for line in proc.stdout:
                seen.setdefault(line.split("]", 1)[0], time.perf_counter() - started)
            said = proc.stderr.read()
            assert proc.wait() == 0, said
            ended = time.perf_counter() - started
            assert seen.keys() >= {"[rank 0", "[rank 1"}, seen
            return max(seen["[rank 0"], seen["[rank 1"]), ended, "(warm)" in said

        log("2-rank DDP: runner train again, from a standby, --cold, --cold --torchrun")
        reps = max(5, self.reps * 2)
        since = time.monotonic()
        once()  # the env exists (the torch sections made it); this one leaves a standby
        runs: dict[str, list[tuple[float, float, bool]]] = {}
        for kind, options in (
            ("warm", ()),
            ("cold", ("--cold",)),
            ("agent", ("--cold", "--torchrun")),
        ):
            runs[kind] = []
            for _ in range(reps):
                if kind == "warm":
                    self.standby_ready(since)
                    since = time.monotonic()
                runs[kind].append(once(*options))
            if kind == "warm":
                self.standby_ready(since)  # the last one's: ready before a cold run is timed
        out: dict[str, Any] = {"ranks": 2, "all_warm": all(w for _, _, w in runs["warm"])}
        for kind, times in runs.items():
            out[f"{kind}_first_lines"] = stats([t[0] for t in times])
            out[f"{kind}_exit"] = stats([t[1] for t in times])
        return out

    def _sdk_config(self, warm: bool, rep: int) -> Any:
        from runner.backend import LocalProcessBackendConfig

        return LocalProcessBackendConfig(
            cache_dir=self.settings.cache_dir, state_dir=self.root / f"warm-{warm}-{rep}", warm=warm
        )

    def _beside_a_standby(self) -> dict[str, list[float]]:
        """A job's own compute time (it times itself) while the standby it leaves warms on
        the other core, against the same job with warm starts off; alternating."""
        from kubeflow.trainer import CustomTrainer

        from runner.backend import LocalProcessBackend
        from runner.warm.pool import close_all

        log("warm start: a job's compute with a standby warming beside it, and without")
        trainer = CustomTrainer(func=busy, packages_to_install=TORCH)
        beside: dict[str, list[float]] = {"alone": [], "beside": []}
        for rep in range(self.reps * 2):
            for kind, warm_on in (("alone", False), ("beside", True)):
                backend = LocalProcessBackend(self._sdk_config(warm_on, 100 + rep))
                _seconds, name = _sdk_job(backend, trainer)
                (line,) = [x for x in backend.get_job_logs(name) if x.startswith("busy ")]
                beside[kind].append(float(line.split()[1]))
            close_all()
        return beside

    def _sdk(self, func: Any, ranks: int) -> tuple[dict[str, Any], Path]:
        from kubeflow.trainer import CustomTrainer

        from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

        cfg = LocalProcessBackendConfig(  # each job a new interpreter, as torchrun's are
            cache_dir=self.settings.cache_dir,
            state_dir=self.settings.state_dir,
            cleanup_venv=False,
            warm=False,
        )
        backend = LocalProcessBackend(cfg)
        trainer = CustomTrainer(
            func=func, packages_to_install=TORCH, resources_per_node={"cpu": ranks}
        )
        names: list[str] = []

        def one() -> None:
            name = backend.train(runtime="torch-distributed", trainer=trainer)
            names.append(name)
            while backend.get_job(name).status not in ("Complete", "Failed"):
                time.sleep(0.005)
            assert backend.get_job(name).status == "Complete", backend.store.load(name).reason

        one()  # the env exists; this warms imports
        return repeat(self.reps, one), backend.store.dir(names[-1])

    # -- 4. scale ------------------------------------------------------------------

    def concurrent(self) -> dict[str, Any]:
        result = {}
        for count, extra in CONCURRENT_SETS.items():
            log(f"scale: {count} concurrent jobs asking for one new set (numpy, {extra})")
            names = [f"c{count}-{i}" for i in range(count)]
            argv = [RUNNER, "--log-format", "json", "train", "--with", "numpy", "--with", extra]
            started = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [*argv, "--name", name, str(self.script)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name in names
            ]
            codes = [p.wait() for p in procs]
            seconds = time.perf_counter() - started
            builds = 0
            for name in names:
                log_path = self.settings.state_dir / "jobs" / name / "log.jsonl"
                for line in log_path.read_text().splitlines():
                    builds += json.loads(line)["event"] == "env.build"
            result[str(count)] = {
                "jobs": count,
                "failed": sum(1 for c in codes if c != 0),
                "builds": builds,
                "wall_seconds": seconds,
            }
        return result

    def shared_torch(self) -> dict[str, Any]:
        log("scale: 16 sets sharing torch, each with one small package, as full envs")
        envs = []
        seconds = []
        full = self.without_bases()
        for extra in SMALL:
            spec = self.spec([*TORCH, extra])
            seconds.append(timed(lambda spec=spec: envs.append(full.ensure(spec))))
        one_env = disk_usage(envs[0].path)
        together = disk_usage(*(e.path for e in envs))
        separate = sum(disk_usage(e.path) for e in envs)
        return {
            "sets": len(envs),
            "build_seconds": stats(seconds),
            "one_torch_env_bytes": one_env,
            "all_envs_bytes": together,
            "sum_of_separate_envs_bytes": separate,
            "ratio_to_one_env": together / one_env,
        }

    # -- 5. layered envs -----------------------------------------------------------

    def layered(self) -> dict[str, Any]:
        """A new set that extends the cached torch env by one small package: as a layer over
        it, as a full env, and as `uv run --with` (each from warm caches, env itself new)."""
        from runner.spec import env_spec

        base = self.cache.ensure(self.spec(TORCH))

        def layer(extra: str) -> EnvSpec:
            return env_spec(self.settings, parse_all([extra]), base_python=str(base.python))

        def forget(spec: EnvSpec) -> None:
            env = self.cache.lookup(spec)
            if env is not None:
                self.cache.remove(env.key)

        log("layered: torch env + six, as a layer over the cached torch env")
        six = layer("six")
        self.cache.ensure(six)  # uv's cache holds six now
        as_layer = repeat(self.reps, lambda: self.cache.ensure(six), setup=lambda: forget(six))
        layer_env = self.cache.ensure(six)
        log("layered: the same set as a full env (a cache without the torch env)")
        full_spec = self.spec([*TORCH, "six"])
        full = self.without_bases()

        def forget_full() -> None:
            env = full.lookup(full_spec)
            if env is not None:
                full.remove(env.key)

        full.ensure(full_spec)
        as_full = repeat(self.reps, lambda: full.ensure(full_spec), setup=forget_full)
        log("layered: the same set as the cache picks it: resolved whole, a layer over torch's")
        self.cache.ensure(full_spec)
        picked = repeat(
            self.reps, lambda: self.cache.ensure(full_spec), setup=lambda: forget(full_spec)
        )
        picked_env = self.cache.ensure(full_spec)
        assert picked_env.meta.base_env == base.key, "the cache did not layer it over torch's"
        log("layered: uv run --with torch --with numpy --with six, its env new each time")
        uv_env = self.uv_environ()
        index = index_args(self.spec(TORCH).index)
        with_args = [arg for req in [*TORCH, "six"] for arg in ("--with", req)]
        uv_argv = [default_uv(), "run", "--no-project", *index, *with_args, "python", "-c", "0"]
        run(uv_argv, env=uv_env)

        def forget_uv_envs() -> None:
            for bucket in (self.cache.root / "uv").glob("environments-v*"):
                shutil.rmtree(bucket, ignore_errors=True)

        uv_run = repeat(self.reps, lambda: run(uv_argv, env=uv_env), setup=forget_uv_envs)
        log("layered: 16 sets over one torch base, one small package each")
        layers = [self.cache.ensure(layer(extra)) for extra in SMALL]
        base_bytes = disk_usage(base.path)
        together = disk_usage(base.path, *(e.path for e in layers))
        return {
            "layer": as_layer,
            "layer_bytes": disk_usage(layer_env.path),
            "full_env": as_full,
            "picked": picked,
            "picked_bytes": disk_usage(picked_env.path),
            "uv_run_with": uv_run,
            "speedup_vs_full": as_full["median"] / as_layer["median"],
            "speedup_vs_uv_run": uv_run["median"] / as_layer["median"],
            "sets": len(layers),
            "base_bytes": base_bytes,
            "base_and_layers_bytes": together,
            "ratio_to_one_env": together / base_bytes,
        }

    # -- 7. the CLI's own cost -----------------------------------------------------

    def conda_lock(self) -> dict[str, Any]:
        """A job from a pixi.lock, its env cached, beside one from a pylock.toml of the same
        PyPI packages: what reading a conda lock (with rattler) adds to each job's start.

        No conda channel is reachable here, so the conda side is the tests' local channel
        (its `python` stands in for conda-forge's); numpy comes from PyPI in both."""
        from envs import Interpreter, formats
        from tests.condachannel import SYSTEM_PYTHON, Wheel, make_channel, write_pixi_lock

        channel = make_channel(self.root / "conda-channel")
        pylock = self.root / "locks" / "pylock.toml"
        pylock.parent.mkdir()
        run([RUNNER, "lock", "--with", "numpy", "-o", str(pylock)])
        conda_python = Interpreter.at(SYSTEM_PYTHON)
        wheels = []
        for package in formats.read(pylock, Interpreter.current()).packages:
            chosen = package.file_for(conda_python)
            wheels.append(Wheel(package.name, package.version, chosen.uri, str(chosen.sha256)))
        records = channel.solve(["python"])
        pixi = write_pixi_lock(
            self.root / "locks" / "pixi.lock", {"default": records}, channel, pypi=wheels
        )
        jobs = {
            kind: [RUNNER, "train", "--lockfile", str(path), str(self.script)]
            for kind, path in (("pylock", pylock), ("pixi", pixi))
        }
        for argv in jobs.values():
            run(argv)  # built once: the figures are cache hits
        reps = max(10, self.reps)
        log(f"lockfiles: a job from pylock.toml and from pixi.lock, env cached, x{reps}")
        found = {kind: repeat(reps, lambda argv=argv: run(argv)) for kind, argv in jobs.items()}
        return {
            **found,
            "ratio": found["pixi"]["median"] / found["pylock"]["median"],
            "conda_packages": len(records),
            "pypi_packages": len(wheels),
        }

    def cli(self) -> dict[str, Any]:
        """Whole processes of the commands a user types most, on this run's records: served
        by the resident runner (the default) and in-process (RUNNER_SERVER=0), side by side;
        a cache-hit `runner train` beside `uv run --with`; the server's memory and open files
        idle and after 1,000 commands."""
        jobs_dir = self.settings.state_dir / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)  # `--only cli`: no job ran before
        missing = JOBS_LISTED - len(list(jobs_dir.glob("*/job.json")))  # not standbys' folders
        with ThreadPoolExecutor(2 * (os.cpu_count() or 1)) as pool:  # untimed: records to list
            list(pool.map(lambda _: self.runner_train([]), range(missing)))
        jobs = sorted(p.parent.name for p in jobs_dir.glob("*/job.json"))
        envs = len(list(self.cache.envs_dir.iterdir()))
        reps = max(10, self.reps)
        log(f"CLI: runner --help, status, jobs ({len(jobs)} jobs), envs list ({envs} envs)")
        off = {**os.environ, "RUNNER_SERVER": "0"}
        commands = {
            "help": ["--help"],
            "status": ["status", jobs[-1]],
            "jobs": ["jobs"],
            "envs_list": ["envs", "list"],
        }
        found: dict[str, Any] = {"job_count": len(jobs), "env_count": envs}
        run([RUNNER, "jobs"])  # the resident runner started, untimed
        server = self._server()
        for key, args in commands.items():  # alternating: like with like, in the same minutes
            served: list[float] = []
            alone: list[float] = []
            for _ in range(reps):
                served.append(timed(lambda a=args: run([RUNNER, *a])))
                alone.append(timed(lambda a=args: run([RUNNER, *a], env=off)))
            found[key], found[f"{key}_in_process"] = stats(served), stats(alone)
            found[f"{key}_ratio"] = found[key]["median"] / found[f"{key}_in_process"]["median"]
        script = str(self.script)
        self.runner_train(NUMPY)  # its env cached; uv's own cache warm for `uv run`
        index = index_args(self.spec(NUMPY).index)
        uv_run = [default_uv(), "run", "--no-project", *index, "--with", "numpy", "python", script]
        run(uv_run, env=self.uv_environ())
        train = [RUNNER, "train", "--with", "numpy", script]
        log(f"CLI: runner train (cache hit) served, in-process, and uv run --with, x{reps}")
        hit: dict[str, list[float]] = {"train_hit": [], "train_hit_in_process": [], "uv_run": []}
        for _ in range(reps):
            hit["train_hit"].append(timed(lambda: run(train)))
            hit["train_hit_in_process"].append(timed(lambda: run(train, env=off)))
            hit["uv_run"].append(timed(lambda: run(uv_run, env=self.uv_environ())))
        found |= {key: stats(values) for key, values in hit.items()}
        found["train_hit_to_uv_run"] = found["train_hit"]["median"] / found["uv_run"]["median"]
        found |= self._many_jobs(reps, off)
        log(f"CLI: {self.server_commands:,} `runner status` through the resident runner")
        for _ in range(self.server_commands):
            run([RUNNER, "status", jobs[-1]])
        after = self._server()
        found["server"] = {
            "idle_rss_bytes": server["rss_bytes"],
            "idle_fds": server["fds"],
            "commands": self.server_commands,
            "after_rss_bytes": after["rss_bytes"],
            "after_fds": after["fds"],
            "same_server": server["pid"] == after["pid"],
        }
        run([RUNNER, "server", "stop"])
        return found

    def _many_jobs(self, reps: int, off: dict[str, str]) -> dict[str, Any]:
        """`runner jobs` (its newest page) and `runner status` over `many_jobs` records, served
        and in-process; the records are written by the store itself (untimed)."""
        from runner.spec import JobSpec, ScriptEntry
        from runner.store import JobStore

        state = self.root / "many-jobs"
        store = JobStore(state)
        spec = JobSpec(entry=ScriptEntry(kind="script", target=str(self.script)))
        log(f"CLI: writing {self.many_jobs:,} job records (untimed)")
        for i in range(self.many_jobs):
            store.create(spec.model_copy(update={"name": f"job{i:06}"}))
        served_env = {**os.environ, "RUNNER_STATE_DIR": str(state)}
        alone_env = {**off, "RUNNER_STATE_DIR": str(state)}
        found: dict[str, Any] = {"many_job_count": self.many_jobs}
        run([RUNNER, "jobs"], env=served_env)  # its server started, untimed
        for key, args in {"jobs": ["jobs"], "status": ["status", "job000000"]}.items():
            served: list[float] = []
            alone: list[float] = []
            for _ in range(reps):
                served.append(timed(lambda a=args: run([RUNNER, *a], env=served_env)))
                alone.append(timed(lambda a=args: run([RUNNER, *a], env=alone_env)))
            found[f"many_{key}"] = stats(served)
            found[f"many_{key}_in_process"] = stats(alone)
        run([RUNNER, "server", "stop"], env=served_env)
        shutil.rmtree(state, ignore_errors=True)
        return found

    def _server(self) -> dict[str, Any]:
        said: dict[str, Any] = json.loads(run([RUNNER, "server", "status", "--json"]).stdout)
        return said


def _sdk_job(backend: Any, trainer: Any) -> tuple[float, str]:
    """One job through our SDK backend, `train()` to Complete: (seconds, its name)."""
    started = time.perf_counter()
    name = backend.train(runtime="torch-distributed", trainer=trainer)
    record = backend.wait_for_job_status(name, polling_interval=0.002, timeout=600)
    seconds = time.perf_counter() - started
    assert record.status == "Complete", list(backend.get_job_logs(name))
    return seconds, name


def _standby_ready(backend: Any) -> None:
    deadline = time.monotonic() + 120
    while not any(s["ready"] for s in backend.standbys()):
        assert time.monotonic() < deadline, "no standby became ready"
        time.sleep(0.02)


def _torch_environ() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issues, with this run's figure and whether it was met."""
    res = report["results"]
    cold, second, cli = res["cold_numpy"], res["second_job"], res["cli"]
    sdk, lay = res["sdk_end_to_end"], res["layered"]
    rows = [
        ("second job vs original (whole process)", second["speedup_vs_original"], ">= 100x", 100),
        ("cache hit in-process (ms)", second["hit_in_process"]["median"] * 1000, "< 10 ms", 10),
        ("cold {numpy} vs original, caches empty", cold["speedup_empty"], ">= 10x", 10),
        ("cold {numpy} vs original, caches warm", cold["speedup_warm"], ">= 10x", 10),
        ("second job: runner train / uv run --with", second["ratio_to_uv_run"], "<= 0.6x", 0.6),
        ("second job: runner train / direct", second["ratio_to_direct"], "<= 1.2x", 1.2),
        ("runner --help (s)", cli["help"]["median"], "<= 0.04 s", 0.04),
        ("runner status (s)", cli["status"]["median"], "<= 0.06 s", 0.06),
        (f"runner jobs, {cli['job_count']} jobs (s)", cli["jobs"]["median"], "<= 0.06 s", 0.06),
        *(
            [(f"runner jobs, newest page of {cli['many_job_count']:,} jobs (s)",
              cli["many_jobs"]["median"], "<= 0.15 s", 0.15)]
            if "many_jobs" in cli
            else []
        ),
        (
            f"runner envs list, {cli['env_count']} envs (s)",
            cli["envs_list"]["median"],
            "<= 0.06 s",
            0.06,
        ),
        *(
            [("runner train, cache hit / uv run --with (numpy)", cli["train_hit_to_uv_run"],
              "<= 0.6x", 0.6)]
            if "train_hit_to_uv_run" in cli
            else []
        ),
        ("SDK example, second job vs original", sdk["speedup_second"], ">= 15x", 15),
        *(
            [
                ("SDK README training, warm job: train() to Complete (s)",
                 res["warm_start"]["runner_warm"]["median"], "<= 0.1 s", 0.1),
                ("SDK README training, warm job vs original", res["warm_start"]["speedup_warm"],
                 ">= 300x", 300),
                ("a job's compute beside a warming standby / alone",
                 res["warm_start"]["beside_ratio"], "<= 1.05x", 1.05),
            ]
            if "warm_start" in res
            else []
        ),
        *(
            [("2-rank DDP, run again: start to both ranks' first line (s)",
              res["ddp_ranks"]["warm_first_lines"]["median"], "<= 0.2 s", 0.2)]
            if "ddp_ranks" in res
            else []
        ),
        ("16 concurrent identical jobs: builds", res["concurrent"]["16"]["builds"], "== 1", 1),
        ("16 sets sharing torch / one torch env (disk)", res["shared_torch"]["ratio_to_one_env"],
         "< 1.5x", 1.5),
        ("layer over cached torch + 1 package: ready (s)", lay["layer"]["median"], "<= 0.2 s",
         0.2),
        ("that layer's own files (MB)", lay["layer_bytes"] / 1e6, "<= 1 MB", 1.0),
        ("16 layers over one torch base / one env (disk)", lay["ratio_to_one_env"], "<= 1.1x",
         1.1),
    ]  # fmt: skip
    out = []
    for name, value, target, bound in rows:
        if target.startswith(">="):
            met = value >= bound
        elif target.startswith("=="):
            met = value == bound
        elif target.startswith("<="):
            met = value <= bound
        else:
            met = value < bound
        out.append({"target": name, "value": round(value, 4), "wanted": target, "met": met})
    return out


HEADLINE = (
    "| new set {torch, numpy}, download caches warm",
    "| second job, same set respelled",
    "| SDK README training example, env cached",
    "| `runner train --nproc-per-node 2 examples/train_ddp.py`, run again (process): start to both",
    "| a job, its env cached (process)",
    "| `status` (process)",
    "| `jobs`, its newest page",
)
"""The rows README shows (the docs' performance page shows them all)."""


def headline(report: dict[str, Any]) -> str:
    """README's table: the rows of `markdown(report)` that HEADLINE names, in its order."""
    rows = markdown(report).split("\n\n")[0].splitlines()
    picked = [row for start in HEADLINE for row in rows if row.startswith(start)]
    return "\n".join([*rows[:2], *picked]) + "\n"


def _launch_rows(lr: dict[str, Any], fig: Callable[[dict[str, Any]], str]) -> list[str]:
    """Two ranks: torchrun's agent against the ranks started directly, at three moments."""
    return [
        f"| {lr['ranks']} gloo ranks, one node, no sandbox (process): {words} | "
        f"torchrun's agent: {fig(lr['torchrun_' + moment])} | the ranks started "
        f"directly: {fig(lr['direct_' + moment])} | {lr['ratio'][moment]:.2f}x |"
        for moment, words in (
            ("first_lines", "start to every rank's first line"),
            ("groups_up", "start to every rank's process group up"),
            ("exit", "start to exit"),
        )
    ]


def _ddp_rows(d: dict[str, Any], fig: Callable[[dict[str, Any]], str]) -> list[str]:
    """The main job (2 gloo ranks, 1 epoch) run again: warm against cold, two moments."""
    return [
        f"| `runner train --nproc-per-node 2 examples/train_ddp.py`, run again (process): "
        f"{words} | cold: {fig(d['cold_' + moment])}; under torchrun's agent "
        f"(`--torchrun`): {fig(d['agent_' + moment])} | from a standby: "
        f"{fig(d['warm_' + moment])} | "
        f"{d['warm_' + moment]['median'] / d['cold_' + moment]['median']:.2f}x cold |"
        for moment, words in (
            ("first_lines", "start to both ranks' first line"),
            ("exit", "start to exit"),
        )
    ]


def _warm_rows(
    res: dict[str, Any],
    fig: Callable[[dict[str, Any]], str],
    ms: Callable[[dict[str, Any]], str],
) -> list[str]:
    """Warm starts, and how torch jobs of several ranks start: the rows of the sections a
    report has (older reports lack some)."""
    rows: list[str] = []
    if "warm_start" in res:
        ws = res["warm_start"]
        rows.append(
            f"| SDK README training example, env cached: `train()` to Complete (in-process) | "
            f"original backend: {fig(ws['original'])} | a new interpreter per job: "
            f"{fig(ws['runner_cold'])}; from a standby: {ms(ws['runner_warm'])} | "
            f"{ws['speedup_cold']:.0f}x; {ws['speedup_warm']:,.0f}x |"
        )
        rows.append(
            f"| what a standby costs | a job's compute alone: {fig(ws['compute_alone'])} | "
            f"beside a warming standby: {fig(ws['compute_beside_standby'])}; idle standby "
            f"(torch): {ws['standby_rss_bytes']['median'] / 2**20:.0f} MiB resident | "
            f"{ws['beside_ratio']:.2f}x |"
        )
    if "launch_ranks" in res:
        rows += _launch_rows(res["launch_ranks"], fig)
    if "ddp_ranks" in res:
        rows += _ddp_rows(res["ddp_ranks"], fig)
    return rows


def markdown(report: dict[str, Any]) -> str:
    """The README table: each comparison as medians (min-max) and the ratio, then the targets.

    Every row compares like with like: whole processes with whole processes, or calls in
    one Python with calls in one Python; a figure with nothing to compare has no ratio."""
    res = report["results"]

    def fig(r: dict[str, Any], scale: float = 1.0, unit: str = "s") -> str:
        return f"{r['median'] * scale:.3g} {unit} ({r['min'] * scale:.3g}-{r['max'] * scale:.3g})"

    def ms(r: dict[str, Any]) -> str:
        return fig(r, 1000, "ms")

    rows = []
    for key, label in (("cold_numpy", "{numpy}"), ("cold_torch_numpy", "{torch, numpy}")):
        c = res[key]
        rows.append(
            f"| new set {label}, every cache empty: a job (process) | original: "
            f"{fig(c['original_cache_empty'])} | `runner train`: {fig(c['runner_cache_empty'])} | "
            f"{c['speedup_empty']:.1f}x |"
        )
        rows.append(
            f"| new set {label}, download caches warm: a job (process) | original: "
            f"{fig(c['original_cache_warm'])} | `runner train`: {fig(c['runner_cache_warm'])} | "
            f"{c['speedup_warm']:.1f}x |"
        )
    w = res["second_job"]
    rows.append(
        f"| second job, same set respelled {{torch, numpy}} (process) | original (rebuilds): "
        f"{fig(w['original_rebuild'])}; `uv run --with`: {ms(w['uv_run_with'])}; "
        f"env's python: {ms(w['direct'])} | `runner train --cold`: {ms(w['runner_train'])}; "
        f"warm (a standby): {ms(w['runner_train_warm'])} | "
        f"{w['speedup_vs_original']:,.0f}x faster than original; "
        f"{w['ratio_to_uv_run']:.2f}x uv run's time ({w['warm_ratio_to_uv_run']:.2f}x warm); "
        f"{w['ratio_to_direct']:.1f}x direct |"
    )
    rows.append(
        f"| its cache hit alone (in-process `EnvCache.ensure`) | - | "
        f"{fig(w['hit_in_process'], 1000, 'ms')} | - |"
    )
    t = res["torch_jobs"]
    what = {1: "1-rank job, a function that only prints", 2: "2-rank job, a gloo all_reduce"}
    cold = ", warm starts off" if "ddp_ranks" in res else ""  # (older reports: left on)
    for ranks in (1, 2):
        rows.append(
            f"| {what[ranks]}: job time | torchrun from the shell: "
            f"{fig(t[f'torch_{ranks}_direct'])} | SDK `train()` to Complete, in a running "
            f"Python{cold}: {fig(t[f'torch_{ranks}_sdk'])} | "
            f"{t[f'torch_{ranks}_ratio']:.2f}x torchrun |"
        )
    e = res["sdk_end_to_end"]
    rows.append(
        f"| SDK README example (torch + numpy): `train()` to Complete | original backend: "
        f"{fig(e['original'])} every job | ours: first job (caches empty) "
        f"{fig(e['runner_first'])}; second {fig(e['runner_second'])} | "
        f"{e['speedup_first']:.1f}x; {e['speedup_second']:.1f}x |"
    )
    rows += _warm_rows(res, fig, ms)
    for count, c in res["concurrent"].items():
        rows.append(
            f"| {count} concurrent jobs, one new set | - | {c['wall_seconds']:.1f} s for all, "
            f"{c['builds']} build(s), {c['failed']} failed | - |"
        )
    d = res["shared_torch"]
    gib = 2**30
    rows.append(
        f"| disk: {d['sets']} sets sharing torch, full envs | "
        f"{d['sum_of_separate_envs_bytes'] / gib:.2f} GiB "
        f"as separate envs | {d['all_envs_bytes'] / gib:.2f} GiB (one torch env: "
        f"{d['one_torch_env_bytes'] / gib:.2f} GiB) | {d['ratio_to_one_env']:.2f}x one env |"
    )
    lay = res["layered"]
    rows.append(
        f"| a new set: cached torch env + six (in-process) | full env: {fig(lay['full_env'])} | "
        f"layer: {fig(lay['layer'])}, {lay['layer_bytes'] / 1e6:.2f} MB of its own | "
        f"{lay['speedup_vs_full']:.1f}x |"
    )
    if "picked" in lay:
        rows.append(
            f"| the same set, no base named: the cache picks the torch env (in-process) | full "
            f"env: {fig(lay['full_env'])} | resolved whole, then a layer: {fig(lay['picked'])}, "
            f"{lay['picked_bytes'] / 1e6:.2f} MB of its own | "
            f"{lay['full_env']['median'] / lay['picked']['median']:.1f}x |"
        )
    rows.append(
        f"| the same set, its env new (process) | `uv run --with`: {fig(lay['uv_run_with'])} | "
        f"- | - |"
    )
    rows.append(
        f"| disk: {lay['sets']} sets as layers over one torch base | - | "
        f"{lay['base_and_layers_bytes'] / gib:.2f} GiB (the base: "
        f"{lay['base_bytes'] / gib:.2f} GiB) | {lay['ratio_to_one_env']:.3f}x one env |"
    )
    if "conda_lock" in res:
        c = res["conda_lock"]
        rows.append(
            f"| a job from a lockfile, its env cached (process) | `--lockfile pylock.toml` "
            f"(numpy): {ms(c['pylock'])} | `--lockfile pixi.lock` ({c['conda_packages']} conda "
            f"packages, numpy from PyPI): {ms(c['pixi'])} | {c['ratio']:.2f}x |"
        )
    cli = res["cli"]
    if "help_in_process" in cli:
        for key, name in (
            ("help", "`--help`"),
            ("status", "`status`"),
            ("jobs", f"`jobs` ({cli['job_count']} jobs)"),
            ("envs_list", f"`envs list` ({cli['env_count']} envs)"),
        ):
            rows.append(
                f"| {name} (process) | in-process (`RUNNER_SERVER=0`): "
                f"{ms(cli[key + '_in_process'])} | served: {ms(cli[key])} | "
                f"{cli[key + '_ratio']:.2f}x |"
            )
        if "many_jobs" in cli:
            for key, name in (("jobs", "`jobs`, its newest page"), ("status", "`status NAME`")):
                alone, served = cli[f"many_{key}_in_process"], cli[f"many_{key}"]
                rows.append(
                    f"| {name}, {cli['many_job_count']:,} jobs (process) | in-process: "
                    f"{ms(alone)} | served: {ms(served)} | "
                    f"{served['median'] / alone['median']:.2f}x |"
                )
        rows.append(
            f"| a job, its env cached (process) | `uv run --with numpy`: {ms(cli['uv_run'])} | "
            f"`runner train --with numpy`: {ms(cli['train_hit'])} (in-process: "
            f"{ms(cli['train_hit_in_process'])}) | {cli['train_hit_to_uv_run']:.2f}x |"
        )
        srv = cli["server"]
        after = {  # reports before `commands` was kept name it in their keys
            k.replace("after_1000_", "after_"): v for k, v in srv.items() if k.startswith("after")
        }
        rows.append(
            f"| the resident runner's memory and open files | idle: "
            f"{srv['idle_rss_bytes'] / 2**20:.0f} MiB, {srv['idle_fds']} fds | after "
            f"{srv.get('commands', 1000):,} commands: {after['after_rss_bytes'] / 2**20:.0f} MiB, "
            f"{after['after_fds']} fds | - |"
        )
    else:
        rows.append(
            f"| the CLI (process) | - | `--help` {ms(cli['help'])}; `status` {ms(cli['status'])}; "
            f"`jobs` ({cli['job_count']} jobs) {ms(cli['jobs'])}; `envs list` "
            f"({cli['env_count']} envs) {ms(cli['envs_list'])} | - |"
        )
    met = {True: "yes", False: "**no**"}
    table = [
        "| measure | the other side | sandbox-runner | ratio |",
        "|---|---|---|---|",
        *rows,
        "",
        "| target | this run | wanted | met |",
        "|---|---|---|---|",
        *(
            f"| {t['target']} | {t['value']:g} | {t['wanted']} | {met[t['met']]} |"
            for t in report["targets"]
        ),
    ]
    return "\n".join(table) + "\n"


def code() -> dict[str, Any]:
    """The commit the report measured, and whether the tree differed from it."""
    root = Path(__file__).parent.parent
    head = run(["git", "rev-parse", "HEAD"], cwd=root).stdout.strip()
    status = run(["git", "status", "--porcelain", "--", "envs", "runner", "benchmarks"], cwd=root)
    dirty = [line[3:] for line in status.stdout.splitlines() if "benchmarks/results/" not in line]
    return {"commit": head, "dirty": dirty}


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uv": run([default_uv(), "--version"]).stdout.strip(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each slow figure")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results", help="report folder"
    )
    parser.add_argument("--quick", action="store_true", help="numpy only: a smoke run, no torch")
    parser.add_argument(
        "--only", choices=["warm", "cli", "ddp"], help="one section, printed, not reported"
    )
    parser.add_argument(
        "--summary", type=Path, metavar="REPORT", help="print the README table of a report.json"
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.summary:
        report = json.loads(args.summary.read_text())
        report["targets"] = targets(report)
        print(markdown(report), end="")
        return
    code_state = code()  # before the run: what it measures
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as scratch:
        Path(scratch).chmod(0o755)  # its scripts: root's jobs run as a user that reads them
        bench = Bench(Path(scratch), args.reps, quick=args.quick)
        if args.only:  # one section alone, for a quick look; never the report
            sections = {"warm": bench.warm_start, "cli": bench.cli, "ddp": bench.ddp_ranks}
            section = sections[args.only]()
            print(json.dumps(section, indent=2))
            return
        results: dict[str, Any] = {"cold_numpy": bench.cold(NUMPY)}
        if not args.quick:
            results["cold_torch_numpy"] = bench.cold(TORCH)
            rebuild = results["cold_torch_numpy"]["original_cache_warm"]
            results["second_job"] = bench.second_job(rebuild)
            results["torch_jobs"] = bench.torch_jobs()
            results["sdk_end_to_end"] = bench.sdk_end_to_end()
            results["warm_start"] = bench.warm_start()
            results["launch_ranks"] = bench.launch_ranks()
            results["ddp_ranks"] = bench.ddp_ranks()
            results["concurrent"] = bench.concurrent()
            results["shared_torch"] = bench.shared_torch()
            results["layered"] = bench.layered()
            results["conda_lock"] = bench.conda_lock()
        results["cli"] = bench.cli()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "code": code_state,
        "machine": machine(),
        "reps": args.reps,
        "results": results,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        report["targets"] = targets(report)
        (args.out / "report.md").write_text(markdown(report))
        (args.out / "summary.md").write_text(headline(report))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    from benchmarks.chart import draw

    chart = draw(report, args.out / "chart.png")
    print(json.dumps(report.get("targets", results), indent=2))
    log(f"report: {args.out / 'report.json'}; chart: {chart or 'not drawn (no matplotlib)'}")
