"""Jobs in conda environments: `runner train --lockfile pixi.lock`, the SDK's `Lockfile`, the
sandbox around a conda prefix, and what `runner envs` says of it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import conda_lock.lockfile  # noqa: F401  (imported once, here: it sets CONDA_ROOT)
import pytest
from kubeflow.trainer import CustomTrainer

from envs import Interpreter
from envs.requirements import parse
from runner.backend import LocalProcessBackend, LocalProcessBackendConfig, Lockfile
from runner.settings import RunnerSettings
from runner.spec import env_spec, open_cache
from runner.store import JobStore
from tests.condachannel import (
    DATA_TEXT,
    SYSTEM_PYTHON,
    Channel,
    Wheel,
    make_channel,
    serve,
    write_pixi_lock,
)
from tests.conftest import UvSpy
from tests.runner.conftest import TORCH, RunCli, in_the_foreground
from tests.runner.test_backend import all_reduce_sum
from tests.wheelhouse import make_wheel

JOB = """\
import sys, tiny_mod, tiny_pkg
print("prefix", sys.prefix)
print("data", tiny_mod.DATA.strip(), "pkg", tiny_pkg.__version__)
"""

HOSTILE = """\
import os, sys
from pathlib import Path
targets = {
    "its conda file": Path(sys.prefix) / "share" / "tiny" / "data.txt",
    "its site-packages": Path(sys.prefix, "lib").glob("python*/site-packages").__next__() / "x.py",
    "its bin folder": Path(sys.prefix) / "bin" / "new-tool",
    "the package cache": Path(sys.argv[1]) / "tiny-data-1.0-0" / "share" / "tiny" / "data.txt",
}
for what, path in targets.items():
    try:
        with open(path, "a") as f:
            f.write("owned")
        print("WROTE", what)
    except OSError as exc:
        print("refused", what, type(exc).__name__)
"""


@pytest.fixture
def channel(tmp_path: Path) -> Channel:
    return make_channel(tmp_path)


@pytest.fixture
def pixi_lock(tmp_path: Path, channel: Channel) -> Path:
    wheel = make_wheel(tmp_path / "wheels", "tiny-pkg", "1.0")
    records = channel.solve(["tiny-mod"])
    return write_pixi_lock(
        tmp_path / "ws" / "pixi.lock", {"default": records}, channel, pypi=[wheel]
    )


def events(run: RunCli, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run("logs", name, "--json").stdout.splitlines()]


def test_a_job_runs_in_the_pixi_locks_env_and_the_next_job_reuses_it(
    runner_cli: RunCli, tmp_path: Path, pixi_lock: Path, uv_spy: UvSpy, settings: RunnerSettings
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    runner_cli("train", "--name", "first", "--lockfile", str(pixi_lock), str(script))
    logs = runner_cli("logs", "first").stdout
    assert f"data {DATA_TEXT.strip()} pkg 1.0" in logs
    progress = [e for e in events(runner_cli, "first") if e["event"] == "env.conda.progress"]
    said = [(e["done"], e["packages"]) for e in progress]
    assert said[0] == (0, 4) and said[-1] == (4, 4), said  # from its start, to its end
    key = JobStore(settings.state_dir).load("first").env_key
    assert key is not None and f"prefix {settings.cache_dir / 'envs' / key}" in logs
    calls = len(uv_spy.calls())
    runner_cli("train", "--name", "second", "--lockfile", str(pixi_lock), str(script))
    names = [e["event"] for e in events(runner_cli, "second")]
    assert "env.hit" in names and "env.build.start" not in names
    assert "env.conda.installed" not in names, "rattler installed nothing the second time"
    assert len(uv_spy.calls()) == calls, "nor did uv"
    assert JobStore(settings.state_dir).load("second").env_key == key
    listed = json.loads(runner_cli("envs", "list", "--json").stdout)
    assert [e["conda"]["packages"] for e in listed] == [{"conda": 4, "pypi": 1}]
    shown = runner_cli("envs", "show", key[:8]).stdout
    assert "conda:        pixi.lock, environment 'default', platform linux-64" in shown
    assert "  tiny-mod==1.0  (conda)" in shown and "  tiny-pkg==1.0\n" in shown


def test_a_bad_environment_or_platform_is_one_line_and_no_job(
    runner_cli: RunCli, tmp_path: Path, pixi_lock: Path, channel: Channel
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    missing = runner_cli(
        "train", "--lockfile", str(pixi_lock), "--environment", "cuda", str(script), check=False
    )
    assert missing.returncode != 0
    assert missing.stderr.strip() == (
        f"error: pixi.lock {str(pixi_lock)!r} has no environment 'cuda' (it has: default); "
        "choose one with --environment"
    )
    mac = write_pixi_lock(
        tmp_path / "mac" / "pixi.lock",
        {"default": channel.solve(["tiny-mod"])},
        channel,
        platform="osx-64",
    )
    other = runner_cli("train", "--lockfile", str(mac), str(script), check=False)
    assert other.returncode != 0 and len(other.stderr.strip().splitlines()) == 1
    assert "locked for osx-64 platform(s); this machine is linux-64" in other.stderr
    assert json.loads(runner_cli("jobs", "--json").stdout) == []


def test_a_hostile_job_cannot_change_its_conda_prefix_or_the_package_cache(
    runner_cli: RunCli, tmp_path: Path, pixi_lock: Path, settings: RunnerSettings
) -> None:
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    cache = settings.cache_dir / "conda"
    runner_cli("train", "--name", "hostile", "--lockfile", str(pixi_lock), str(script), str(cache))
    logs = runner_cli("logs", "hostile").stdout
    assert "WROTE" not in logs, logs
    assert logs.count("refused") == 4, logs
    key = JobStore(settings.state_dir).load("hostile").env_key
    assert key is not None
    data = settings.cache_dir / "envs" / key / "share" / "tiny" / "data.txt"
    assert data.read_text() == DATA_TEXT


def test_export_refuses_a_job_whose_env_holds_conda_packages_naming_them(
    runner_cli: RunCli, tmp_path: Path, pixi_lock: Path
) -> None:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    runner_cli("train", "--name", "conda", "--lockfile", str(pixi_lock), str(script))
    refused = runner_cli("export", "trainjob", "conda", check=False)
    assert refused.returncode != 0
    assert "conda packages (_tiny_mutex 1.1.1w, python " in refused.stderr
    assert "tiny-data 1.0, tiny-mod 1.0)" in refused.stderr
    export = runner_cli(
        "envs", "export", "--format", "pylock", only_env_key(runner_cli), check=False
    )
    assert export.returncode != 0 and "writes pip-only locks" in export.stderr


def only_env_key(run: RunCli) -> str:
    (env,) = json.loads(run("envs", "list", "--json").stdout)
    return str(env["key"])


@pytest.mark.torch
def test_the_sdk_runs_a_ddp_job_in_a_pixi_lock_with_torch_from_pypi(
    torch_cache: Path, tmp_path: Path, uv_spy: UvSpy, channel: Channel
) -> None:
    cfg = LocalProcessBackendConfig(
        cache_dir=torch_cache, state_dir=tmp_path / "state", uv=str(uv_spy.path), cancel_grace=1
    )
    torch_lock = open_cache(cfg).resolve(env_spec(cfg, [parse(r) for r in TORCH]))
    wheels = []
    for package in torch_lock.packages:
        chosen = package.file_for(Interpreter.at(SYSTEM_PYTHON))
        assert chosen.sha256 is not None
        wheels.append(Wheel(package.name, package.version, chosen.uri, chosen.sha256))
    path = write_pixi_lock(
        tmp_path / "ws" / "pixi.lock", {"default": channel.solve(["python"])}, channel, pypi=wheels
    )
    backend = LocalProcessBackend(cfg)
    job = backend.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(func=all_reduce_sum, resources_per_node={"cpu": 2}),
        options=[Lockfile(str(path))],
    )
    backend.wait_for_job_status(job, polling_interval=0.2, timeout=300)
    assert "[rank 1] SUM: 1" in list(backend.get_job_logs(job))
    record = backend.store.load(job)
    assert record.spec.lockfile is not None and record.spec.lockfile.kind == "conda"
    env = open_cache(cfg).get(str(record.env_key))
    assert env.meta.conda is not None and env.meta.conda["packages"]["pypi"] == len(wheels)
    with pytest.raises(ValueError, match="has no environment 'gpu'"):
        backend.train(
            runtime="torch-distributed",
            trainer=CustomTrainer(func=all_reduce_sum),
            options=[Lockfile(str(path), environment="gpu")],
        )


def test_a_conda_env_is_no_base_for_a_layer(
    runner_cli: RunCli, tmp_path: Path, pixi_lock: Path
) -> None:
    """A layer sees its base's packages but not its prefix, where conda packages find their
    files (tiny_mod reads sys.prefix/share): refused, by lockfile and by key, naming why."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    by_lock = runner_cli(
        "train", "--base", str(pixi_lock), "--with", "tiny-pkg", str(script), check=False
    )
    assert by_lock.returncode == 2 and "is a conda environment, which layers" in by_lock.stderr
    runner_cli("train", "--lockfile", str(pixi_lock), str(script))
    key = only_env_key(runner_cli)
    by_key = runner_cli("train", "--base", key[:8], "--with", "tiny-pkg", str(script), check=False)
    assert by_key.returncode == 2 and "is a conda environment, which layers" in by_key.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_during_a_conda_download_cancels_the_job_at_once_and_publishes_nothing(
    cli_environ: dict[str, str],
    runner_cli: RunCli,
    tmp_path: Path,
    channel: Channel,
    pixi_lock: Path,
    settings: RunnerSettings,
    sig: int,
) -> None:
    """A stalled mirror must not hold Ctrl-C (or a SIGTERM) for as long as it stalls."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    with serve(channel) as (url, handler):
        handler.stall = threading.Event()
        environ = {**cli_environ, "RUNNER_CONDA_MIRRORS": f"{channel.url}={url}"}
        argv = ["train", "--name", "stopped", "--lockfile", str(pixi_lock), str(script)]
        proc = subprocess.Popen(
            in_the_foreground(sys.executable, "-m", "runner.cli", *argv),
            env=environ,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while not any("tiny-data" in p for p in handler.requested):
            assert time.monotonic() < deadline and proc.poll() is None, "no download began"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)  # the stalled download would take 120 s
    assert proc.returncode == 130, err
    assert "job stopped Failed: cancelled" in err
    record = JobStore(settings.state_dir).load("stopped")
    assert record.status == "Failed" and record.reason == "cancelled"
    assert not list((settings.cache_dir / "envs").iterdir())
    runner_cli("train", "--name", "after", "--lockfile", str(pixi_lock), str(script))
    assert "data hello" in runner_cli("logs", "after").stdout


def test_envs_create_builds_a_lockfiles_env_ahead_and_the_job_hits_it(
    runner_cli: RunCli, tmp_path: Path, pixi_lock: Path, settings: RunnerSettings
) -> None:
    made = json.loads(runner_cli("envs", "create", "--lockfile", str(pixi_lock), "--json").stdout)
    assert made["conda"]["packages"] == {"conda": 4, "pypi": 1}
    script = tmp_path / "job.py"
    script.write_text(JOB)
    runner_cli("train", "--name", "later", "--lockfile", str(pixi_lock), str(script))
    assert "env.hit" in [e["event"] for e in events(runner_cli, "later")]
    assert JobStore(settings.state_dir).load("later").env_key == made["key"]
    pylock = tmp_path / "pylock.toml"
    runner_cli("lock", "--with", "tiny-pkg", "-o", str(pylock))
    plain = json.loads(runner_cli("envs", "create", "--lockfile", str(pylock), "--json").stdout)
    assert plain["conda"] is None and plain["packages"] == ["dep-a==2.0", "tiny-pkg==1.0"]
    both = runner_cli("envs", "create", "--lockfile", str(pylock), "--with", "six", check=False)
    assert both.returncode == 2 and "give packages or a lockfile, not both" in both.stderr
