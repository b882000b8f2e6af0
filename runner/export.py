"""A job as a Kubeflow TrainJob: the same entry, pinned by the lock that ran here.

The SDK's Kubernetes backend writes an unpinned `pip install` of
`packages_to_install` into every TrainJob; `trainjob()` writes the job's own
lock instead (hashed, `--no-deps`: nothing is resolved on the cluster), then
runs the same entry the same way (`torchrun` for torch jobs, as the runtime
does). The manifest is built with the kubeflow SDK's own models
(`kubeflow_trainer_api`), so what they do not accept is never written.

What the runtime's image holds is not installed again: its torch (with the CUDA
stack that comes with it), and for a layer, every package of its base. Where the
torch that ran here is not the one the runtime's image is declared to hold, the
export refuses unless told to go on (`force`).

The entry travels inside the command, as the SDK's own function jobs do: the
function's source with its arguments, or the script's text. A ConfigMap would
need a volume the TrainJob's trainer has no field for (only a runtime patch of
the pod), so one file inline keeps the manifest a single object;
scripts over 256 KiB are refused (bake them into the image). Asked to
(`folder`), the script's whole folder travels too, packed (tar.gz, base64), up
to 768 KiB: the modules beside it, small data files.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shlex
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from runner.credentials import looks_secret, secret_names
from runner.errors import RunnerError
from runner.spec import FunctionEntry, JobSpec, ScriptEntry

if TYPE_CHECKING:
    from envs.lockfile import LockedPackage
    from runner.settings import RunnerSettings
    from runner.store import JobRecord

API_VERSION = "trainer.kubeflow.org/v1alpha1"
DEFAULT_RUNTIME = "torch-distributed"
MAX_INLINE = 256 * 1024
MAX_PACKED = 768 * 1024
_EOF = "__SANDBOX_RUNNER_EOF__"
_IMAGE_STACK = re.compile(r"^(torch|triton|pytorch-triton|nvidia-.*)$")
"""torch and what its image brings with it (the CUDA libraries): the runtime's, never ours."""


class ExportError(RunnerError):
    """A job that cannot be expressed as a TrainJob as it is; the message names why."""


def cluster_name(name: str) -> str:
    """`name` as a TrainJob name: an RFC 1035 label (a letter first; a-z, 0-9, '-'; <= 63)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not cleaned[:1].isalpha():
        cleaned = f"job-{cleaned}".rstrip("-")
    return cleaned[:63].rstrip("-")


def _is_local(url: str | None) -> bool:
    return url is not None and ("://" not in url or url.startswith("file:"))


def requirements(
    packages: Iterable[LockedPackage], provided: Callable[[str, str], bool]
) -> tuple[list[str], list[str]]:
    """The hashed requirements the cluster installs, and notes for the user.

    Each locked package the image does not provide, as `name==version` with every
    file's hash: pip on the cluster finds it in its index and installs only the very
    file that ran here (for the image's Python, if the lock holds several). A package
    named by its file (`pkg @ URL`) keeps its URL; one whose file is local here
    (`pkg @ file://...`) is refused, naming it: no index holds it. One that came from
    a folder or a `file://` index here is pinned all the same (mirrors hold the index's
    own files), with a note.
    """
    lines: list[str] = []
    mirrored: list[str] = []
    packages = list(packages)
    conda = sorted(
        f"{p.name} {p.version}"
        for p in packages
        if p.manager == "conda" and not provided(p.name, p.version)
    )
    if conda:
        raise ExportError(
            f"the job's environment holds conda packages ({', '.join(conda)}), which the "
            "cluster's pip cannot install: bake them into the runtime's image (a conda-based "
            "image built from the same pixi.lock or conda-lock.yml)"
        )
    for package in sorted({p.name: p for p in packages}.values(), key=lambda p: p.name):
        if provided(package.name, package.version):
            continue
        marker = f" ; {package.marker}" if package.marker else ""
        hashes = " ".join(sorted({f"--hash=sha256:{f.sha256}" for f in package.files}))
        if package.direct:
            url = next((f.url for f in package.files if f.url and not _is_local(f.url)), None)
            if url is None:
                raise ExportError(
                    f"{package.name} {package.version} is a local file here "
                    f"({package.files[0].filename}) that no index holds: publish it to an "
                    "index the cluster reaches, or bake it into the runtime's image"
                )
            lines.append(f"{package.name} @ {url}{marker} {hashes}")
            continue
        if all(_is_local(f.url) for f in package.files):
            mirrored.append(f"{package.name} {package.version}")
        lines.append(f"{package.name}=={package.version}{marker} {hashes}")
    notes = [
        f"{len(mirrored)} package(s) came from a local folder or mirror here "
        f"({', '.join(mirrored)}): the cluster's index must hold the same files "
        "(their sha256 are pinned)"
    ]
    return lines, notes if mirrored else []


def torch_check(
    ran: str | None, runtime_torch: str | None, force: bool
) -> Callable[[str, str], bool]:
    """Refuse (unless `force`) when the torch that ran here is not the runtime image's."""
    if ran and runtime_torch and not force:
        wanted = Requirement(runtime_torch).specifier
        if not wanted.contains(ran.split("+")[0], prereleases=True):
            raise ExportError(
                f"the job ran torch {ran} here; the runtime's image holds {runtime_torch}: "
                "give --force to export it all the same (the job then runs on the image's torch)"
            )
    return lambda name, _version: bool(_IMAGE_STACK.match(name))


def _entry_script(spec: JobSpec) -> tuple[str, str]:
    """(file name, text) of what the job runs: the function with its call, or the script."""
    entry = spec.entry
    if isinstance(entry, FunctionEntry):
        call = f"{entry.function}(**json.loads({json.dumps(entry.args)!r}))"
        main = f"\n\n\nif __name__ == '__main__':\n    import json\n\n    {call}\n"
        text = entry.source.rstrip() + main
        return f"{entry.function}.py", text
    assert isinstance(entry, ScriptEntry) and entry.kind == "script"
    path = Path(entry.target)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ExportError(f"cannot read the job's script {str(path)!r}: {exc.strerror}") from None
    if len(text.encode()) > MAX_INLINE:
        raise ExportError(
            f"script {str(path)!r} is over {MAX_INLINE // 1024} KiB, too large to travel in "
            "the TrainJob's command: bake it into the runtime's image"
        )
    return path.name, text


def _heredoc(path: str, text: str) -> str:
    if _EOF in text:
        raise ExportError(f"the job's text holds {_EOF!r}, which the export uses as a delimiter")
    return f"cat > {shlex.quote(path)} <<'{_EOF}'\n{text.rstrip(chr(10))}\n{_EOF}\n"


def _packed(folder: Path) -> str:
    """`folder` (hidden files, `__pycache__` left out) as a base64 tar.gz, small enough to
    travel in the command, or refused."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(folder, arcname=".", filter=_worth_packing)
    packed = base64.b64encode(out.getvalue()).decode()
    if len(packed) > MAX_PACKED:
        raise ExportError(
            f"folder {str(folder)!r} packs to {len(packed) // 1024} KiB, over the "
            f"{MAX_PACKED // 1024} KiB that travel in the TrainJob's command: bake it into "
            "the runtime's image, or export the script alone"
        )
    return packed


def _worth_packing(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(info.name).name
    if name != "." and (name.startswith(".") or name == "__pycache__"):
        return None
    return info if info.isfile() or info.isdir() else None


def command(
    spec: JobSpec, pins: list[str], index_args: list[str], folder: bool = False
) -> list[str]:
    """`bash -c` that installs exactly `pins`, writes the entry (with `folder`, the script's
    whole folder), and runs it as the runtime does (torchrun for torch jobs; its settings
    come from the TrainJob's torch plugin)."""
    launcher = "torchrun" if spec.framework == "torch" else "python"
    entry = spec.entry
    script = ["set -euo pipefail\n"]
    if pins:
        script.append(_heredoc("requirements.txt", "\n".join(pins)))
        pip = ["python", "-m", "pip", "install", "--quiet", "--no-warn-script-location"]
        pip += ["--require-hashes", "--no-deps", *index_args, "-r", "requirements.txt"]
        script.append("PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1 ")
        script.append(shlex.join(pip) + "\n")
    if isinstance(entry, ScriptEntry) and entry.kind == "module":
        run = [launcher, "-m", entry.target, *entry.argv]
    elif folder:
        if not (isinstance(entry, ScriptEntry) and entry.kind == "script"):
            raise ExportError("only a script job has a folder to take along")
        source = Path(entry.target).parent
        script.append(f"mkdir -p job && base64 -d <<'{_EOF}' | tar -xzf - -C job\n")
        script.append(f"{_packed(source)}\n{_EOF}\ncd job\n")
        run = [launcher, Path(entry.target).name, *entry.argv]
    else:
        name, text = _entry_script(spec)
        script.append(_heredoc(name, text))
        argv = entry.argv if isinstance(entry, ScriptEntry) else ()
        run = [launcher, name, *argv]
    script.append(shlex.join(run) + "\n")
    return ["bash", "-c", "".join(script)]


def _quantity(size: int) -> str:
    for unit, scale in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


def resources(spec: JobSpec) -> dict[str, str]:
    """What each node asks for: its CPU cores, its memory limit, its GPUs."""
    found = {}
    if spec.cpus:
        found["cpu"] = str(spec.cpus)
    if spec.sandbox is not None and spec.sandbox.memory:
        found["memory"] = _quantity(spec.sandbox.memory)
    if spec.gpus:
        found["nvidia.com/gpu"] = str(spec.gpus)
    return found


def secret_name(job: str) -> str:
    """The Secret a job's credentials are read from on the cluster."""
    return f"{cluster_name(job)[:57]}-env"


def secrets_note(spec: JobSpec, job: str) -> str | None:
    """What to run once so the cluster has the job's credentials (their values never shown)."""
    names = secret_names(spec.env)
    if not names:
        return None
    literals = " ".join(f'--from-literal={n}="${n}"' for n in names)
    return (
        f"{', '.join(names)} look like credentials: the manifest reads them from the Secret "
        f"{secret_name(job)}, which you make once with `kubectl create secret generic "
        f"{secret_name(job)} {literals}` (--embed-secrets writes the values instead)"
    )


def manifest(
    spec: JobSpec,
    name: str,
    pins: list[str],
    *,
    runtime: str = DEFAULT_RUNTIME,
    index_args: list[str] | None = None,
    annotations: dict[str, str] | None = None,
    folder: bool = False,
    embed_secrets: bool = False,
) -> dict[str, Any]:
    """The TrainJob, as the kubeflow SDK's models write it (camelCase, no empty fields).

    A variable that looks like a credential (`credentials.looks_secret`) is written as a
    reference to the Secret `secret_name(name)`, never as its value, unless `embed_secrets`.
    """
    from kubeflow_trainer_api import models

    def env_var(key: str, value: str) -> Any:
        if embed_secrets or not looks_secret(key, value):
            return models.IoK8sApiCoreV1EnvVar(name=key, value=value)
        ref = models.IoK8sApiCoreV1SecretKeySelector(name=secret_name(name), key=key)
        source = models.IoK8sApiCoreV1EnvVarSource(secretKeyRef=ref)
        return models.IoK8sApiCoreV1EnvVar(name=key, valueFrom=source)

    asked = resources(spec)
    quantities = {k: models.IoK8sApimachineryPkgApiResourceQuantity(v) for k, v in asked.items()}
    trainer = models.TrainerV1alpha1Trainer(
        numNodes=spec.num_nodes,
        numProcPerNode=spec.nproc_per_node,
        command=command(spec, pins, index_args or [], folder),
        env=[env_var(k, v) for k, v in sorted(spec.env.items())] or None,
        resourcesPerNode=models.IoK8sApiCoreV1ResourceRequirements(
            requests=quantities, limits=quantities
        )
        if asked
        else None,
    )
    job = models.TrainerV1alpha1TrainJob(
        apiVersion=API_VERSION,
        kind="TrainJob",
        metadata=models.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=cluster_name(name), annotations=annotations or None
        ),
        spec=models.TrainerV1alpha1TrainJobSpec(
            runtimeRef=models.TrainerV1alpha1RuntimeRef(name=runtime), trainer=trainer
        ),
    )
    data: dict[str, Any] = job.to_dict()
    return data


def locked_torch(packages: Iterable[LockedPackage], base: dict[str, str]) -> str | None:
    """The torch version the job ran on: its env's, else its base's."""
    return next((p.version for p in packages if p.name == "torch"), base.get("torch"))


def provided_by(
    base: dict[str, str], image: Callable[[str, str], bool]
) -> Callable[[str, str], bool]:
    """A package the cluster does not install: the image's stack, or one of a layer's base."""
    return lambda name, version: (
        image(name, version) or base.get(canonicalize_name(name)) == version
    )


def trainjob(
    settings: RunnerSettings,
    record: JobRecord,
    *,
    runtime: str | None = None,
    runtime_torch: str | None = None,
    force: bool = False,
    folder: bool = False,
    resolve: bool = False,
    embed_secrets: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The TrainJob for a job that ran (or was only defined) here, and notes for the user.

    The lock is the job's env's (`runner envs export` of it), else its lockfile, else the
    cache's resolution of its packages now: for a job that ran in an env since removed, only
    with `resolve` (and a note says so). `runtime_torch` is the torch the runtime's image
    holds (`torch==2.13.0`), checked against the torch the job ran on.
    """
    from envs import EnvNotFoundError
    from envs.base import probe
    from runner.spec import env_spec, open_cache

    spec = record.spec
    cache = open_cache(settings)
    env = None
    resolved_again: list[str] = []
    if record.env_key:
        try:
            env = cache.get(record.env_key)
        except EnvNotFoundError:
            env = None
    if env is not None:
        lock = env.lock
    elif spec.lockfile is not None:
        lock = spec.lockfile.lock
    else:
        if record.env_key and not resolve:  # it ran, in an env since removed
            raise ExportError(
                f"job {record.name!r} ran in env {record.env_key[:12]}, which was removed "
                "since: its exact pins are gone, and resolving its packages now may pin "
                "other versions than ran; pass --resolve to export a new resolution"
            )
        lock = cache.resolve(env_spec(settings, spec.packages, spec.index, spec.base_python))
        if record.env_key:
            resolved_again.append(
                f"the job's env {record.env_key[:12]} was removed: its packages were resolved "
                "again now, and the pins may differ from what ran"
            )
    packages = list(lock.packages)
    image_has: dict[str, str] = {}  # a layer's base that the runtime's image stands for
    base_env = env.meta.base_env if env is not None else None
    if spec.base_packages and base_env:  # the runtime's packages (the SDK): the image's
        image_has = _pins(cache.get(base_env).meta.packages)
    elif base_env:  # a cached env built here from an index: installed there too
        packages += cache.get(base_env).lock.packages
    elif record.base_python or spec.base_python:  # a machine's interpreter: the image's
        image_has = probe(str(record.base_python or spec.base_python)).versions
    image = torch_check(locked_torch(packages, image_has), runtime_torch, force)
    pins, notes = requirements(packages, provided_by(image_has, image))
    index = env.meta.index if env is not None else spec.index.shown()
    args, more = cluster_index(index)
    annotations = {"sandbox-runner/job": record.name}
    if env is not None:
        annotations["sandbox-runner/env"] = env.key
    name = runtime or spec.runtime or DEFAULT_RUNTIME
    doc = manifest(
        spec,
        record.name,
        pins,
        runtime=name,
        index_args=args,
        annotations=annotations,
        folder=folder,
        embed_secrets=embed_secrets,
    )
    said = None if embed_secrets else secrets_note(spec, record.name)
    return doc, resolved_again + notes + more + ([said] if said else [])


def _pins(pins: Iterable[str]) -> dict[str, str]:
    return {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pins if "==" in p}


def cluster_index(index: dict[str, Any]) -> tuple[list[str], list[str]]:
    """pip's index options for the cluster: the job's remote indexes (a local folder or
    `file://` index means nothing there); one that needs credentials is left to the
    cluster's own pip configuration, with a note."""
    args, notes = [], []
    urls = [("--index-url", index.get("index_url"))]
    urls += [("--extra-index-url", u) for u in index.get("extra_index_urls", [])]
    for option, url in urls:
        if not url or not url.startswith(("http://", "https://")) or "pypi.org/simple" in url:
            continue
        if "****" in url:
            notes.append(
                f"the index {url} needs credentials: give them to pip on the cluster "
                "(PIP_INDEX_URL from a Secret); the manifest does not name it"
            )
            continue
        args += [option, url]
    return args, notes


def as_yaml(doc: dict[str, Any]) -> str:
    """The manifest as YAML for `kubectl apply -f`; the command's script as a readable block."""
    import yaml

    class Dumper(yaml.SafeDumper):  # type: ignore[misc]
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    return str(yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100))
