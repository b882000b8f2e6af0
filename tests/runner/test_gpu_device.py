"""On a machine with an NVIDIA GPU: CUDA through the default sandbox, for real.

Skips where there is no GPU or no Python with CUDA torch (CI has neither). On a GPU
machine, torch with CUDA is usually preinstalled at a system Python, and no index
may be reachable: jobs run as layers over that interpreter (`--base-python`).
`RUNNER_TEST_CUDA_PYTHON` names it; else `python3` on PATH is tried.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runner import gpus
from tests.runner.conftest import JOBS, cli_runner
from tests.runner.test_sandbox import output, records

pytestmark = pytest.mark.gpu
CHECK = str(JOBS / "cuda_check.py")


def _cuda_python() -> str | None:
    python = os.environ.get("RUNNER_TEST_CUDA_PYTHON") or shutil.which("python3")
    if python is None:
        return None
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        subprocess.run([python, "-c", probe], capture_output=True, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return python


@pytest.fixture(scope="module")
def cuda_python() -> str:
    if not gpus.scan():
        pytest.skip("no NVIDIA GPU on this machine")
    python = _cuda_python()
    if python is None:
        pytest.skip("no Python with CUDA torch (set RUNNER_TEST_CUDA_PYTHON)")
    return python


def on_gpu() -> None:
    import torch

    print(f"sdk cuda {torch.cuda.is_available()} {torch.cuda.device_count()}")


def test_a_gpu_job_gets_cuda_and_nccl_in_the_default_sandbox(
    cuda_python: str, tmp_path: Path
) -> None:
    environ = {
        **os.environ,
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
        "RUNNER_CACHE_DIR": str(tmp_path / "cache"),
        "RUNNER_NO_INDEX": "1",
    }
    run = cli_runner(environ, tmp_path, "--log-format", "json")
    base = ("--base-python", cuda_python)
    run("train", "--name", "gpu", *base, "--gpus", "1", "--torchrun", CHECK)
    lines = output(records(run, "gpu"))
    assert "cuda True devices 1" in lines, lines
    assert any(line.startswith("rank 0 nccl sum 1 on ") for line in lines), lines
    run("train", "--name", "no-gpu", *base, CHECK)  # asked for none: sees none
    assert output(records(run, "no-gpu")) == ["cuda False devices 0"]


def test_the_sdk_gets_a_gpu_for_resources_per_node(cuda_python: str, tmp_path: Path) -> None:
    from kubeflow.trainer import CustomTrainer

    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    backend = LocalProcessBackend(
        LocalProcessBackendConfig(
            cache_dir=tmp_path / "cache",
            state_dir=tmp_path / "state",
            base_python=Path(cuda_python),
            no_index=True,
        )
    )
    job = backend.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(func=on_gpu, resources_per_node={"gpu": 1}),
    )
    backend.wait_for_job_status(job, polling_interval=0.5, timeout=600)
    assert "sdk cuda True 1" in list(backend.get_job_logs(job))
