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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import original
from benchmarks.jobs import all_reduce, trivial
from benchmarks.measure import disk_usage, repeat, run, stats, timed
from envs import EnvCache, EnvSpec
from envs.builder import default_uv, index_args
from envs.requirements import parse_all

NUMPY = ["numpy"]
TORCH = ["torch==2.13.0", "numpy"]
TORCH_RESPELLED = ["NumPy", "Torch==2.13.0"]
SMALL = [  # pure-Python packages, one per set that otherwise shares torch
    "six", "idna", "attrs", "packaging", "pyparsing", "tomli", "toml", "colorama",
    "click", "pytz", "certifi", "urllib3", "wheel", "decorator", "tqdm", "typing-extensions",
]  # fmt: skip
CONCURRENT_SETS = {1: "six", 4: "idna", 16: "attrs"}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, root: Path, reps: int) -> None:
        self.root = root
        self.reps = reps
        os.environ["RUNNER_STATE_DIR"] = str(root / "state")  # for the `runner` processes too
        os.environ["RUNNER_CACHE_DIR"] = str(root / "cache")
        from runner.settings import RunnerSettings

        self.settings = RunnerSettings(cache_dir=root / "cache", state_dir=root / "state")
        self.cache = EnvCache(self.settings.cache_dir)
        self.script = root / "trivial.py"
        self.script.write_text("print('ok')\n")

    def spec(self, packages: list[str]) -> EnvSpec:
        from runner.spec import env_spec

        return env_spec(self.settings, parse_all(packages))

    # -- 1. cold -------------------------------------------------------------------

    def cold(self, packages: list[str]) -> dict[str, Any]:
        log(f"cold {packages}: original (venv + ensurepip + pip install)")
        orig = repeat(self.reps, lambda: original.build_and_remove(self.root, packages))
        log(f"cold {packages}: runner, empty uv cache")
        counter = iter(range(10**6))

        def empty_cache_build() -> None:
            root = self.root / f"cold-{next(counter)}"
            try:
                EnvCache(root).ensure(self.spec(packages))
            finally:
                shutil.rmtree(root, ignore_errors=True)

        empty = repeat(self.reps, empty_cache_build)
        log(f"cold {packages}: runner, warm uv cache")
        spec = self.spec(packages)
        self.cache.ensure(spec)  # warms uv's cache

        def forget() -> None:
            env = self.cache.lookup(spec)
            if env is not None:
                self.cache.remove(env.key)

        warm = repeat(self.reps, lambda: self.cache.ensure(spec), setup=forget)
        return {
            "original": orig,
            "runner_uv_cache_empty": empty,
            "runner_uv_cache_warm": warm,
            "speedup_empty": orig["median"] / empty["median"],
            "speedup_warm": orig["median"] / warm["median"],
        }

    # -- 2. warm reuse -------------------------------------------------------------

    def warm_reuse(self, cold_original: dict[str, Any]) -> dict[str, Any]:
        log("warm reuse: runner cache hit, another spelling and order")
        self.cache.ensure(self.spec(TORCH))
        hit = repeat(max(50, self.reps), lambda: self.cache.ensure(self.spec(TORCH_RESPELLED)))
        log("warm reuse: uv run --with (warm uv cache)")
        uv_env = {
            **os.environ,
            "UV_CACHE_DIR": str(self.cache.root / "uv"),
            "UV_NO_CONFIG": "1",
        }
        index = index_args(self.spec(TORCH).index)
        with_args = [arg for req in TORCH_RESPELLED for arg in ("--with", req)]
        uv_argv = [default_uv(), "run", "--no-project", *index, *with_args, "python", "-c", "0"]
        run(uv_argv, env=uv_env)  # its own env cache, warm
        uv_total = repeat(self.reps, lambda: run(uv_argv, env=uv_env))
        bare = repeat(self.reps, lambda: run([sys.executable, "-c", "0"]))
        uv_setup = stats([max(0.0, v - bare["median"]) for v in uv_total["values"]])
        return {
            "original_rebuild": cold_original,
            "runner_hit_in_process": hit,
            "uv_run_with": uv_setup,
            "uv_run_with_total": uv_total,
            "speedup_vs_original": cold_original["median"] / hit["median"],
            "speedup_vs_uv_run": uv_setup["median"] / hit["median"],
        }

    # -- 3. job overhead -----------------------------------------------------------

    def overhead(self) -> dict[str, Any]:
        from runner.job import execute
        from runner.spec import JobSpec, ScriptEntry
        from runner.store import JobStore

        store = JobStore(self.settings.state_dir)
        env = self.cache.ensure(self.spec(NUMPY))
        log("overhead: trivial python job, runner (in-process, as the SDK backend) vs direct")
        counter = iter(range(10**6))

        def through_runner() -> None:
            spec = JobSpec.create(
                name=f"trivial-{next(counter)}",
                entry=ScriptEntry(kind="script", target=str(self.script)),
                requirements=parse_all(NUMPY),
            )
            store.create(spec)
            record = execute(store, spec.name, self.settings)
            assert record.status == "Complete", record.reason

        through_runner()  # first use of the sandbox probe and imports
        reps = max(10, self.reps)
        runner_py = repeat(reps, through_runner)
        direct_py = repeat(reps, lambda: run([str(env.python), str(self.script)]))
        result: dict[str, Any] = {
            "python_runner": runner_py,
            "python_direct": direct_py,
            "python_ratio": runner_py["median"] / direct_py["median"],
        }
        for ranks, func in ((1, trivial), (2, all_reduce)):
            log(f"overhead: {ranks}-rank torch job, SDK backend vs torchrun directly")
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

    def _sdk(self, func: Any, ranks: int) -> tuple[dict[str, Any], Path]:
        from kubeflow.trainer import CustomTrainer

        from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

        cfg = LocalProcessBackendConfig(
            cache_dir=self.settings.cache_dir, state_dir=self.settings.state_dir, cleanup_venv=False
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
        runner_bin = str(Path(sys.executable).parent / "runner")
        result = {}
        for count, extra in CONCURRENT_SETS.items():
            log(f"scale: {count} concurrent jobs asking for one new set (numpy, {extra})")
            names = [f"c{count}-{i}" for i in range(count)]
            argv = [runner_bin, "--log-format", "json", "train", "--with", "numpy", "--with", extra]
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
        log("scale: 16 sets sharing torch, each with one small package")
        envs = []
        seconds = []
        for extra in SMALL:
            spec = self.spec([*TORCH, extra])
            seconds.append(timed(lambda spec=spec: envs.append(self.cache.ensure(spec))))
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
        log("layered: the same set as a full env")
        full_spec = self.spec([*TORCH, "six"])
        self.cache.ensure(full_spec)
        as_full = repeat(
            self.reps, lambda: self.cache.ensure(full_spec), setup=lambda: forget(full_spec)
        )
        log("layered: uv run --with torch --with numpy --with six, its env new each time")
        uv_env = {**os.environ, "UV_CACHE_DIR": str(self.cache.root / "uv"), "UV_NO_CONFIG": "1"}
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
            "uv_run_with": uv_run,
            "speedup_vs_full": as_full["median"] / as_layer["median"],
            "speedup_vs_uv_run": uv_run["median"] / as_layer["median"],
            "sets": len(layers),
            "base_bytes": base_bytes,
            "base_and_layers_bytes": together,
            "ratio_to_one_env": together / base_bytes,
        }

    # -- 6. CLI start-up -----------------------------------------------------------

    def cli_startup(self) -> dict[str, Any]:
        runner_bin = str(Path(sys.executable).parent / "runner")
        log("CLI: runner --help")
        return repeat(max(10, self.reps), lambda: run([runner_bin, "--help"]))


def _torch_environ() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, with this run's figure and whether it was met."""
    sections = report["results"]
    warm, over = sections["warm_reuse"], sections["overhead"]
    hit_ms = warm["runner_hit_in_process"]["median"] * 1000
    disk = sections["shared_torch"]["ratio_to_one_env"]
    rows = [
        ("warm reuse vs original, {torch, numpy}", warm["speedup_vs_original"], ">= 100x", 100),
        ("cache hit in-process (ms)", hit_ms, "< 10 ms", 10),
        # the original keeps pip's download cache between jobs: compare with the runner's caches
        (
            "cold {numpy} vs original, caches warm",
            sections["cold_numpy"]["speedup_warm"],
            ">= 10x",
            10,
        ),
        (
            "cold {numpy} vs original, uv cache empty",
            sections["cold_numpy"]["speedup_empty"],
            ">= 10x",
            10,
        ),
        ("trivial job overhead (runner / direct)", over["python_ratio"], "<= 1.2x", 1.2),
        ("16 concurrent identical jobs: builds", sections["concurrent"]["16"]["builds"], "== 1", 1),
        ("16 sets sharing torch / one torch env (disk)", disk, "< 1.5x", 1.5),
        ("runner --help (s)", sections["cli_startup"]["median"], "< 0.3 s", 0.3),
    ]
    if "layered" in sections:
        lay = sections["layered"]
        rows += [
            (
                "layer over cached torch + 1 package: ready (s)",
                lay["layer"]["median"],
                "<= 0.2 s",
                0.2,
            ),
            ("that layer's own files (MB)", lay["layer_bytes"] / 1e6, "<= 1 MB", 1.0),
            (
                "16 layers over one torch base / one env (disk)",
                lay["ratio_to_one_env"],
                "<= 1.1x",
                1.1,
            ),
        ]
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


def markdown(report: dict[str, Any]) -> str:
    """The README table: each comparison as medians (min-max) and the ratio, then the targets."""
    res = report["results"]

    def fig(r: dict[str, Any], scale: float = 1.0, unit: str = "s") -> str:
        return f"{r['median'] * scale:.3g} {unit} ({r['min'] * scale:.3g}-{r['max'] * scale:.3g})"

    rows = []
    for key, label in (("cold_numpy", "{numpy}"), ("cold_torch_numpy", "{torch, numpy}")):
        c = res[key]
        rows.append(
            f"| cold env {label} | {fig(c['original'])} | {fig(c['runner_uv_cache_empty'])} "
            f"empty uv cache; {fig(c['runner_uv_cache_warm'])} warm caches | "
            f"{c['speedup_empty']:.1f}x; {c['speedup_warm']:.1f}x |"
        )
    w = res["warm_reuse"]
    rows.append(
        f"| second job, same set respelled {{torch, numpy}}: env set-up | "
        f"{fig(w['original_rebuild'])} (rebuilds) | {fig(w['runner_hit_in_process'], 1000, 'ms')} "
        f"(cache hit); `uv run --with`: {fig(w['uv_run_with'])} | "
        f"{w['speedup_vs_original']:,.0f}x vs original; {w['speedup_vs_uv_run']:,.0f}x vs uv run |"
    )
    o = res["overhead"]
    for key, mine, label in (
        ("python", "python_runner", "trivial python job (direct: env's python)"),
        ("torch_1", "torch_1_sdk", "1-rank torchrun job via the SDK (direct: torchrun)"),
        ("torch_2", "torch_2_sdk", "2-rank torchrun job via the SDK (direct: torchrun)"),
    ):
        rows.append(
            f"| {label} | {fig(o[key + '_direct'])} | {fig(o[mine])} | "
            f"{o[key + '_ratio']:.2f}x the direct run |"
        )
    for count, c in res["concurrent"].items():
        rows.append(
            f"| {count} concurrent jobs, one new set | - | {c['wall_seconds']:.1f} s for all, "
            f"{c['builds']} build(s), {c['failed']} failed | - |"
        )
    d = res["shared_torch"]
    gib = 2**30
    rows.append(
        f"| disk: {d['sets']} sets sharing torch | {d['sum_of_separate_envs_bytes'] / gib:.2f} GiB "
        f"as separate envs | {d['all_envs_bytes'] / gib:.2f} GiB (one torch env: "
        f"{d['one_torch_env_bytes'] / gib:.2f} GiB) | {d['ratio_to_one_env']:.2f}x one env |"
    )
    if "layered" in res:
        lay = res["layered"]
        rows.append(
            f"| a new set: cached torch env + six | full env: {fig(lay['full_env'])}; "
            f"`uv run --with`: {fig(lay['uv_run_with'])} | layer: {fig(lay['layer'])}, "
            f"{lay['layer_bytes'] / 1e6:.2f} MB of its own | {lay['speedup_vs_full']:.0f}x vs "
            f"full env; {lay['speedup_vs_uv_run']:.0f}x vs uv run |"
        )
        rows.append(
            f"| disk: {lay['sets']} sets as layers over one torch base | - | "
            f"{lay['base_and_layers_bytes'] / gib:.2f} GiB (the base: "
            f"{lay['base_bytes'] / gib:.2f} GiB) | {lay['ratio_to_one_env']:.3f}x one env |"
        )
    rows.append(f"| `runner --help` | - | {fig(res['cli_startup'], 1000, 'ms')} | - |")
    met = {True: "yes", False: "**no**"}
    table = [
        "| measure | original / direct | sandbox-runner | ratio |",
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
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as scratch:
        bench = Bench(Path(scratch), args.reps)
        results: dict[str, Any] = {"cold_numpy": bench.cold(NUMPY)}
        if not args.quick:
            results["cold_torch_numpy"] = bench.cold(TORCH)
            results["warm_reuse"] = bench.warm_reuse(results["cold_torch_numpy"]["original"])
            results["overhead"] = bench.overhead()
            results["concurrent"] = bench.concurrent()
            results["shared_torch"] = bench.shared_torch()
            results["layered"] = bench.layered()
        results["cli_startup"] = bench.cli_startup()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "reps": args.reps,
        "results": results,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        report["targets"] = targets(report)
        (args.out / "summary.md").write_text(markdown(report))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    from benchmarks.chart import draw

    chart = draw(report, args.out / "chart.png")
    print(json.dumps(report.get("targets", results), indent=2))
    log(f"report: {args.out / 'report.json'}; chart: {chart or 'not drawn (no matplotlib)'}")
