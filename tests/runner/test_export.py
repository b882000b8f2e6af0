"""`runner export trainjob`: a local job as a Kubeflow TrainJob, validated against the CRD's own
OpenAPI schema and the kubeflow SDK's own models. No cluster is reachable here; the command a
manifest carries is run for real, in a fresh venv, as the cluster's container would run it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from runner.export import cluster_name
from runner.sandbox import SandboxPolicy
from runner.settings import RunnerSettings
from runner.spec import FunctionEntry, JobSpec, LockedSet, ScriptEntry
from runner.store import JobStore
from tests.envs.test_layers import make_base
from tests.runner.conftest import RunCli
from tests.wheelhouse import make_wheel

ROOT = Path(__file__).parents[2]
SCHEMA = ROOT / "tests" / "data" / "trainjob.v1alpha1.schema.json"
SHARED = ROOT.parent / "shared" / "schemas" / SCHEMA.name


def test_the_schema_copy_is_the_crds_unchanged() -> None:
    recorded = re.search(
        r"trainjob\.v1alpha1\.schema\.json.*sha256 ([0-9a-f]{64})",
        (ROOT / "tests" / "data" / "SOURCES.txt").read_text(),
    )
    assert recorded is not None
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == recorded[1]
    if SHARED.exists():  # beside the project on the machines it is made on
        assert SHARED.read_bytes() == SCHEMA.read_bytes()


def valid(manifest: dict[str, Any]) -> dict[str, Any]:
    """The CRD's schema, its name rules (CEL, which jsonschema does not run), the SDK's models."""
    from kubeflow_trainer_api import models

    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    name = manifest["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert models.TrainerV1alpha1TrainJob.from_dict(manifest).to_dict() == manifest
    return manifest


def export(run: RunCli, name: str, *args: str) -> dict[str, Any]:
    return valid(yaml.safe_load(run("export", "trainjob", name, *args).stdout))


def script_of(manifest: dict[str, Any]) -> str:
    command = manifest["spec"]["trainer"]["command"]
    assert command[:2] == ["bash", "-c"]
    return str(command[2])


def installed(manifest: dict[str, Any]) -> list[str]:
    """The `name==version` lines the command installs."""
    found = re.search(r"requirements.txt <<'(\w+)'\n(.*?)\n\1\n", script_of(manifest), re.S)
    return [] if found is None else [line.split(" ")[0] for line in found[2].splitlines()]


def greet(greeting: str, times: int) -> None:
    import tiny_pkg

    for _ in range(times):
        print(greeting, tiny_pkg.__version__)


def test_a_function_job_exports_its_lock_and_its_call_and_the_command_runs(
    runner_cli: RunCli, store: JobStore, tmp_path: Path, wheelhouse: Path
) -> None:
    entry = FunctionEntry.of(greet, {"greeting": "hello from the pod", "times": 2})
    store.create(JobSpec.create(name="fn-job", entry=entry, requirements=["tiny-pkg"]))
    manifest = export(runner_cli, "fn-job")
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert manifest["kind"] == "TrainJob" and manifest["metadata"]["name"] == "fn-job"
    assert manifest["spec"]["runtimeRef"] == {"name": "torch-distributed"}
    assert installed(manifest) == ["dep-a==2.0", "tiny-pkg==1.0"]
    said = runner_cli("export", "trainjob", "fn-job").stderr  # the wheelhouse is a local folder
    assert "2 package(s) came from a local folder or mirror here (dep-a 2.0, tiny-pkg 1.0)" in said

    # the container's part, for real: a fresh venv, pip from the job's pins, the same call
    ran = run_in_pod(manifest, tmp_path, wheelhouse)
    assert ran.splitlines()[-2:] == ["hello from the pod 1.0"] * 2


def run_in_pod(manifest: dict[str, Any], tmp_path: Path, wheelhouse: Path) -> str:
    """The manifest's command as the training container runs it: in an empty folder, with a
    fresh Python whose pip finds the wheels (here the test wheelhouse stands for the index)."""
    venv, pod = tmp_path / "pod-python", tmp_path / "pod"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pod.mkdir()
    environ = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "HOME": str(tmp_path),
    }
    ran = subprocess.run(
        ["bash", "-c", script_of(manifest)],
        cwd=pod,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_a_script_job_takes_its_folder_along_when_asked(
    runner_cli: RunCli, tmp_path: Path, wheelhouse: Path
) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "model.py").write_text("import tiny_pkg\nVERSION = tiny_pkg.__version__\n")
    (project / "data" / "rows.txt").write_text("a\nb\n")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "junk.pyc").write_bytes(b"x")
    (project / "train.py").write_text(
        "import os, sys\nfrom model import VERSION\n"
        "rows = open(os.path.join(os.path.dirname(__file__), 'data/rows.txt')).read().split()\n"
        "print('model', VERSION, 'rows', len(rows), 'args', sys.argv[1:])\n"
    )
    runner_cli(
        "train", "--name", "with-folder", "--with", "tiny-pkg", str(project / "train.py"), "x"
    )
    alone = export(runner_cli, "with-folder")
    assert "base64 -d" not in script_of(alone)  # the script alone, unless asked
    manifest = export(runner_cli, "with-folder", "--folder")
    packed = re.search(r"base64 -d <<'(\w+)'.*?\n(.*?)\n\1\n", script_of(manifest), re.S)
    assert packed is not None
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(packed[2]))) as tar:
        names = sorted(Path(n).as_posix() for n in tar.getnames())
    assert names == [".", "data", "data/rows.txt", "model.py", "train.py"]  # no __pycache__
    ran = run_in_pod(manifest, tmp_path, wheelhouse)
    assert ran.splitlines()[-1] == "model 1.0 rows 2 args ['x']"


def test_a_torch_script_job_of_two_nodes_with_gpus_memory_and_env(
    runner_cli: RunCli, store: JobStore, tmp_path: Path, wheelhouse: Path
) -> None:
    torch = make_wheel(tmp_path / "wheels", "torch", "2.13.0")  # a stand-in: the image has it
    script = tmp_path / "train_ddp.py"
    script.write_text("import os\nprint('rank', os.environ.get('RANK'))\n")
    store.create(
        JobSpec.create(
            name="0ddp-" + "x" * 58,
            entry=ScriptEntry(kind="script", target=str(script), argv=("--epochs", "3", "a b")),
            requirements=["torch==2.13.0", "tiny-pkg==0.5"],
            index={"find_links": [str(torch.parent), str(wheelhouse)], "no_index": True},
            framework="torch",
            num_nodes=2,
            nproc_per_node=2,
            gpus=1,
            cpus=4,
            env={"WANDB_MODE": "offline", "LR": "0.1"},
            sandbox=SandboxPolicy(memory=8 * 2**30),
        )
    )
    manifest = export(runner_cli, "0ddp-" + "x" * 58)
    assert manifest["metadata"]["name"] == ("job-0ddp-" + "x" * 58)[:63]
    trainer = manifest["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 2
    asked = {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert trainer["resourcesPerNode"] == {"limits": asked, "requests": asked}
    assert trainer["env"] == [
        {"name": "LR", "value": "0.1"},
        {"name": "WANDB_MODE", "value": "offline"},
    ]
    assert installed(manifest) == ["dep-a==1.0", "tiny-pkg==0.5"]  # torch is the image's
    command = script_of(manifest)
    assert "print('rank', os.environ.get('RANK'))" in command  # the script travels inline
    assert command.rstrip().endswith("torchrun train_ddp.py --epochs 3 'a b'")


def test_names_are_made_valid_for_the_cluster() -> None:
    assert cluster_name("my-job") == "my-job"
    assert cluster_name("0abc") == "job-0abc"
    assert cluster_name("My_Job.v2--") == "my-job-v2"
    assert cluster_name("a" * 80) == "a" * 63
    assert cluster_name("9" + "-" * 70) == "job-9"


def test_a_layer_over_an_interpreter_installs_its_own_and_over_a_cached_env_both(
    runner_cli: RunCli, tmp_path: Path, wheelhouse: Path
) -> None:
    """An interpreter base is the machine's (a preinstalled torch): the runtime's image stands
    in for it. A cached env base was built here from an index: the cluster installs it too."""
    script = tmp_path / "job" / "both.py"
    script.parent.mkdir()
    script.write_text("import other_pkg, tiny_pkg\n")
    python = make_base(tmp_path / "venv", wheelhouse, "tiny-pkg==0.5")
    runner_cli(
        "train",
        "--name",
        "on-python",
        "--base-python",
        str(python),
        "--with",
        "other-pkg",
        str(script),
    )
    assert installed(export(runner_cli, "on-python")) == ["other-pkg==1.0"]

    runner_cli("envs", "create", "--with", "tiny-pkg==0.5")
    runner_cli(
        "train", "--name", "on-env", "--with", "tiny-pkg==0.5", "--with", "other-pkg", str(script)
    )
    assert installed(export(runner_cli, "on-env")) == [
        "dep-a==1.0",
        "other-pkg==1.0",
        "tiny-pkg==0.5",
    ]


def test_a_lockfile_job_exports_exactly_its_lock(runner_cli: RunCli, tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    runner_cli("lock", "--with", "tiny-pkg==0.5", "-o", str(lock))
    script = tmp_path / "job" / "show.py"
    script.parent.mkdir()
    script.write_text("import tiny_pkg\n")
    runner_cli("train", "--name", "locked", "--lockfile", str(lock), str(script))
    exported = installed(export(runner_cli, "locked"))
    key = json.loads(runner_cli("status", "locked", "--json").stdout)["env_key"]
    env_lock = runner_cli("envs", "export", key, "--format", "requirements").stdout
    assert (
        exported
        == re.findall(r"^([a-z0-9-]+==\S+)", env_lock, re.M)
        == [
            "dep-a==1.0",
            "tiny-pkg==0.5",
        ]
    )


def test_what_cannot_run_on_the_cluster_is_refused_naming_it(
    runner_cli: RunCli,
    store: JobStore,
    tmp_path: Path,
    wheelhouse: Path,
    settings: RunnerSettings,
) -> None:
    script = tmp_path / "job" / "show.py"
    script.parent.mkdir()
    script.write_text("import tiny_pkg\n")
    lines = [  # a hashed requirements lock naming local files: it runs here, and only here
        f"{name} @ {wheel.as_uri()} --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}"
        for name, wheel in [
            ("tiny-pkg", wheelhouse / "tiny_pkg-1.0-py3-none-any.whl"),
            ("dep-a", wheelhouse / "dep_a-2.0-py3-none-any.whl"),
        ]
    ]
    (tmp_path / "local.txt").write_text("\n".join(lines) + "\n")
    runner_cli(
        "train", "--name", "local-wheel", "--lockfile", str(tmp_path / "local.txt"), str(script)
    )
    refused = runner_cli("export", "trainjob", "local-wheel", check=False)
    assert refused.returncode == 1
    assert "dep-a 2.0 is a local file here (dep_a-2.0-py3-none-any.whl)" in refused.stderr
    assert "Traceback" not in refused.stderr

    # a package named by its path, as `--with 'pkg @ file://...'` names it
    named = f"tiny-pkg @ {(wheelhouse / 'tiny_pkg-0.5-py3-none-any.whl').as_uri()}"
    runner_cli("train", "--name", "by-path", "--with", named, str(script))
    by_path = runner_cli("export", "trainjob", "by-path", check=False)
    assert by_path.returncode == 1
    assert "tiny-pkg 0.5 is a local file here (tiny_pkg-0.5-py3-none-any.whl)" in by_path.stderr

    # named by a remote URL: that URL, hashed, is what the cluster installs
    url = "https://files.example/tiny_pkg-1.0-py3-none-any.whl"
    (tmp_path / "remote.txt").write_text(f"tiny-pkg @ {url} --hash=sha256:{'ab' * 32}\n")
    locked = LockedSet.read(tmp_path / "remote.txt", settings)
    store.create(
        JobSpec.create(
            name="by-url", entry=ScriptEntry(kind="script", target=str(script)), lockfile=locked
        )
    )
    assert installed(export(runner_cli, "by-url")) == ["tiny-pkg"]
    assert f"tiny-pkg @ {url} --hash=sha256:{'ab' * 32}" in script_of(export(runner_cli, "by-url"))

    # a torch other than the runtime image's: refused unless --force
    other = make_wheel(tmp_path / "wheels", "torch", "9.9")
    store.create(
        JobSpec.create(
            name="other-torch",
            entry=ScriptEntry(kind="script", target=str(script)),
            requirements=["torch==9.9"],
            index={"find_links": [str(other.parent)], "no_index": True},
            framework="torch",
        )
    )
    mismatch = runner_cli("export", "trainjob", "other-torch", check=False)
    assert mismatch.returncode == 1 and "ran torch 9.9 here" in mismatch.stderr
    assert "torch==2.13.0" in mismatch.stderr and "--force" in mismatch.stderr
    export(runner_cli, "other-torch", "--force")

    missing = runner_cli("export", "trainjob", "nope", check=False)
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_the_sdk_backend_exports_the_same_manifest(
    runner_cli: RunCli, store: JobStore, settings: RunnerSettings
) -> None:
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    entry = FunctionEntry.of(greet, {"greeting": "hi", "times": 1})
    store.create(JobSpec.create(name="sdk-fn", entry=entry, requirements=["tiny-pkg"]))
    backend = LocalProcessBackend(LocalProcessBackendConfig(**settings.model_dump()))
    assert valid(backend.export_trainjob("sdk-fn")) == export(runner_cli, "sdk-fn")


CREDENTIALS = {
    "TOKEN": "supersecret",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "HF_TOKEN": "hf_" + "a1B2" * 9,
    "NOTES": "ghp_" + "x9Y8" * 9,  # an innocent name, a value shaped like GitHub's token
}


def test_credentials_are_exported_as_a_secret_reference_never_their_value(
    runner_cli: RunCli, store: JobStore, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    env = {**CREDENTIALS, "LR": "0.1", "WANDB_MODE": "offline"}
    store.create(
        JobSpec.create(name="creds", entry=ScriptEntry(kind="script", target=str(script)), env=env)
    )
    proc = runner_cli("export", "trainjob", "creds")
    manifest = valid(yaml.safe_load(proc.stdout))
    for value in CREDENTIALS.values():
        assert value not in proc.stdout and value not in proc.stderr
    by_name = {e["name"]: e for e in manifest["spec"]["trainer"]["env"]}
    assert by_name["LR"] == {"name": "LR", "value": "0.1"}
    assert by_name["WANDB_MODE"]["value"] == "offline"
    for name in CREDENTIALS:
        assert by_name[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": "creds-env", "key": name}},
        }
    literals = " ".join(f'--from-literal={n}="${n}"' for n in sorted(CREDENTIALS))
    assert f"kubectl create secret generic creds-env {literals}" in proc.stderr
    # on purpose, the values go in
    embedded = export(runner_cli, "creds", "--embed-secrets")
    assert {e["name"]: e.get("value") for e in embedded["spec"]["trainer"]["env"]} == env


def test_credentials_are_shown_by_name_only_in_status_jobs_logs_and_the_sdk(
    runner_cli: RunCli, store: JobStore, settings: RunnerSettings, tmp_path: Path
) -> None:
    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    options = [f"--env={k}={v}" for k, v in CREDENTIALS.items()]
    runner_cli("train", "--name", "creds", *options, str(script))
    shown = [
        runner_cli("status", "creds", "--json").stdout,
        runner_cli("jobs", "--json").stdout,
        runner_cli("logs", "creds", "--json").stdout,
        store.log_path("creds").read_text(),
    ]
    backend = LocalProcessBackend(LocalProcessBackendConfig(**settings.model_dump()))
    shown += [repr(backend.get_job("creds")), repr(backend.get_job_events("creds"))]
    assert sorted(json.loads(shown[0])["spec"]["env"]) == sorted(CREDENTIALS)
    for text in shown:
        for value in CREDENTIALS.values():
            assert value not in text


def test_a_job_whose_env_was_removed_is_not_exported_from_a_new_resolution_unasked(
    runner_cli: RunCli, tmp_path: Path
) -> None:
    script = tmp_path / "job" / "uses.py"
    script.parent.mkdir()
    script.write_text("import tiny_pkg\n")
    runner_cli("train", "--name", "ran", "--with", "tiny-pkg==0.5", str(script))
    key = json.loads(runner_cli("status", "ran", "--json").stdout)["env_key"]
    runner_cli("envs", "rm", key[:12])
    refused = runner_cli("export", "trainjob", "ran", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"error: job 'ran' ran in env {key[:12]}, which was removed")
    assert "--resolve" in line
    again = runner_cli("export", "trainjob", "ran", "--resolve")
    assert installed(valid(yaml.safe_load(again.stdout))) == ["dep-a==1.0", "tiny-pkg==0.5"]
    assert f"note: the job's env {key[:12]} was removed: its packages were resolved" in again.stderr
