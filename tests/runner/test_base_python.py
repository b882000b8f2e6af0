"""Jobs in a layer over an interpreter's installed packages (`--base-python`), as on a GPU
machine whose system Python holds CUDA torch: real uv, real venvs, the real sandbox."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from envs.lockfile import Lock
from runner.settings import RunnerSettings
from runner.spec import env_spec, open_cache
from tests.envs.test_layers import make_base
from tests.runner.conftest import JOBS, TORCH, RunCli, cli_runner
from tests.runner.test_sandbox import output, records


def test_a_job_over_a_base_python_imports_the_base_and_its_own_packages(
    runner_cli: RunCli, settings: RunnerSettings, tmp_path: Path, wheelhouse: Path
) -> None:
    # the base lives under /tmp, which the sandbox hides: its site folder is bound back
    base = make_base(tmp_path / "base", wheelhouse, "tiny-pkg==0.5")
    script = tmp_path / "job" / "both.py"
    script.parent.mkdir()
    script.write_text(
        "import dep_a, other_pkg, tiny_pkg\n"
        "print(tiny_pkg.__version__, dep_a.__version__, other_pkg.__file__.split('/')[-3])\n"
    )
    runner_cli(
        "train", "--name", "layered", "--base-python", str(base), "--with", "other-pkg", str(script)
    )
    assert output(records(runner_cli, "layered")) == ["0.5 1.0 site-packages"]
    (env,) = (settings.cache_dir / "envs").iterdir()
    assert not list(env.rglob("tiny_pkg*")) and list(env.rglob("other_pkg*"))  # own only
    assert f"(layer over {base})" in runner_cli("envs", "list").stdout
    assert f"layer over:   {base}" in runner_cli("envs", "show", env.name).stdout

    bad = runner_cli("train", "--base-python", str(tmp_path / "nope"), str(script), check=False)
    assert bad.returncode == 2 and "is not a python executable" in bad.stderr


@pytest.mark.torch
def test_a_torch_job_runs_on_the_torch_its_base_python_holds(
    torch_cache: Path, tmp_path: Path
) -> None:
    """No torch requirement, no index: torchrun and torch come from the base, as they would
    from a GPU machine's preinstalled CUDA torch."""
    settings = RunnerSettings(cache_dir=torch_cache)  # the torch tests' env, built once
    torch_env = open_cache(settings).ensure(env_spec(settings, TORCH))
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(tmp_path / "layers"),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
        "RUNNER_NO_INDEX": "1",  # nothing may come from an index: torch is the base's
    }
    run = cli_runner(environ, tmp_path, "--log-format", "json")
    base = str(torch_env.path / "bin" / "python")
    run(
        "train",
        "--name",
        "on-base",
        "--base-python",
        base,
        "--nproc-per-node",
        "2",
        str(JOBS / "ddp_check.py"),
    )
    lines = {
        json.loads(line)["line"]
        for line in run("logs", "on-base", "--json").stdout.splitlines()
        if '"output"' in line
    }
    assert {"rank 0 of 2 sum 1", "rank 1 of 2 sum 1"} <= lines
    (layer,) = (tmp_path / "layers" / "envs").iterdir()
    assert not list(layer.rglob("torch"))  # the base's torch, used where it is


def uses_tiny() -> None:
    import tiny_pkg
    import torch

    print(f"tiny {tiny_pkg.__version__} torch {torch.__version__.split('+')[0]}")


def uses_other() -> None:
    import other_pkg
    import torch

    print(f"other {other_pkg.__name__} torch {torch.__version__.split('+')[0]}")


@pytest.mark.torch
def test_sdk_trainers_layer_their_packages_over_one_cached_runtime_env(
    torch_cache: Path, tmp_path: Path, wheelhouse: Path
) -> None:
    from kubeflow.trainer import CustomTrainer

    from envs.cache import EnvInUseError
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    links = [str(wheelhouse), *os.environ.get("PIP_FIND_LINKS", "").split()]
    cfg = LocalProcessBackendConfig(
        cache_dir=torch_cache, state_dir=tmp_path / "state", find_links=links
    )
    backend = LocalProcessBackend(cfg)
    said = []
    for func, package in ((uses_tiny, "tiny-pkg"), (uses_other, "other-pkg")):
        job = backend.train(
            runtime="torch-distributed",
            trainer=CustomTrainer(func=func, packages_to_install=[package]),
        )
        backend.wait_for_job_status(
            job, polling_interval=0.2, timeout=600, status={"Complete", "Failed"}
        )
        assert backend.get_job(job).status == "Complete", list(backend.get_job_logs(job))[-15:]
        said += [line for line in backend.get_job_logs(job) if "torch 2.13.0" in line]
        record = backend.store.load(job)
        assert record.base_python is not None
    assert said == ["tiny 1.0 torch 2.13.0", "other other_pkg torch 2.13.0"]
    cache = open_cache(cfg)
    layers = [e for e in cache.ready() if e.meta.base_env]
    assert len(layers) == 2 and len({e.meta.base_env for e in layers}) == 1  # one torch base
    assert all(e.meta.size_bytes < 1_000_000 for e in layers)  # torch is not in them
    (base_key,) = {e.meta.base_env for e in layers}
    with pytest.raises(EnvInUseError, match="is the base of 2 layered"):
        cache.remove(str(base_key))


def test_a_job_layers_over_a_cached_env_named_by_its_key(
    runner_cli: RunCli, settings: RunnerSettings, tmp_path: Path
) -> None:
    runner_cli("envs", "create", "--with", "tiny-pkg==0.5")
    (base,) = (settings.cache_dir / "envs").iterdir()
    script = tmp_path / "job" / "both.py"
    script.parent.mkdir()
    script.write_text("import other_pkg, tiny_pkg\nprint(tiny_pkg.__version__)\n")
    runner_cli(
        "train", "--name", "on-key", "--base", base.name[:8], "--with", "other-pkg", str(script)
    )
    assert output(records(runner_cli, "on-key")) == ["0.5"]
    listing = runner_cli("envs", "list").stdout
    assert f"(layer over {base.name[:12]})" in listing
    # the base stays while a layer stands on it; both go when named together, layer first
    refused = runner_cli("envs", "rm", base.name, check=False)
    assert refused.returncode == 1 and "is the base of 1 layered" in refused.stderr
    layer = next(p.name for p in (settings.cache_dir / "envs").iterdir() if p != base)
    runner_cli("envs", "rm", base.name, layer)
    assert not list((settings.cache_dir / "envs").iterdir())
    both = runner_cli(
        "train", "--base", "abcd", "--base-python", "python3", str(script), check=False
    )
    assert both.returncode == 2 and "not both" in both.stderr


def test_a_lockfile_base_is_built_once_and_the_lock_of_a_layer_holds_base_and_layer(
    runner_cli: RunCli, settings: RunnerSettings, tmp_path: Path, wheelhouse: Path
) -> None:
    base_lock = tmp_path / "base.toml"
    runner_cli("lock", "--with", "tiny-pkg==0.5", "-o", str(base_lock))
    script = tmp_path / "job" / "both.py"
    script.parent.mkdir()
    script.write_text("import dep_a, other_pkg, tiny_pkg\nprint(dep_a.__version__)\n")
    for name in ("first", "second"):
        runner_cli(
            "train", "--name", name, "--base", str(base_lock), "--with", "other-pkg", str(script)
        )
        assert output(records(runner_cli, name)) == ["1.0"]  # tiny-pkg 0.5 holds dep-a < 2
    cache = open_cache(settings)
    (layer,) = [e for e in cache.ready() if e.meta.base_env]
    assert {e.key for e in cache.ready()} == {layer.key, layer.meta.base_env}  # built once each
    assert cache.get(str(layer.meta.base_env)).lock.pins() == Lock(base_lock.read_text()).pins()

    # `runner lock` of the layered set: the base's packages and the layer's, one full set
    whole = tmp_path / "whole.toml"
    runner_cli("lock", "--base", str(base_lock), "--with", "other-pkg", "-o", str(whole))
    pins = ["dep-a==1.0", "other-pkg==1.0", "tiny-pkg==0.5"]
    assert Lock(whole.read_text()).pins() == pins
    runner_cli("train", "--name", "whole", "--lockfile", str(whole), str(script))
    assert output(records(runner_cli, "whole")) == ["1.0"]  # as one env, on a fresh machine
    by_key = runner_cli("lock", "--base", layer.meta.base_env or "", "--with", "other-pkg")
    assert Lock(by_key.stdout).pins() == pins

    # over an interpreter: the layer's own packages; the base is named, not locked
    python = make_base(tmp_path / "venv", wheelhouse, "tiny-pkg==0.5")
    own = runner_cli("lock", "--base-python", str(python), "--with", "other-pkg")
    assert "tiny-pkg" not in own.stdout and "other-pkg" in own.stdout
    assert f"its base, {python}, is named, not locked" in own.stderr


def test_a_job_whose_set_extends_a_cached_env_runs_in_a_layer_over_it_in_the_sandbox(
    runner_cli: RunCli, settings: RunnerSettings, tmp_path: Path
) -> None:
    script = tmp_path / "job" / "both.py"
    script.parent.mkdir()
    script.write_text("import dep_a, tiny_pkg\nprint(tiny_pkg.__version__, dep_a.__version__)\n")
    runner_cli("train", "--name", "small", "--with", "tiny-pkg==0.5", str(script))
    runner_cli(
        "train", "--name", "more", "--with", "tiny-pkg==0.5", "--with", "other-pkg", str(script)
    )
    assert output(records(runner_cli, "more")) == ["0.5 1.0"]  # the base's, bound read-only
    small, more = (json.loads(runner_cli("status", n, "--json").stdout) for n in ("small", "more"))
    base = open_cache(settings).get(small["env_key"])
    assert open_cache(settings).get(more["env_key"]).meta.base_env == base.key
    assert more["base_python"] == str(base.python)
    assert f"(layer over {base.key[:12]})" in runner_cli("envs", "list").stdout
