"""LocalProcessBackend: the Kubeflow Trainer SDK's local backend, on the env cache.

It takes and returns the SDK's own types and statuses. Unlike the SDK's own
local backend, which builds a fresh venv with pip for every job, a job here
runs in a cached environment: a repeated package set starts at once.

Use it through the SDK's client with `trainer_client()`::

    from runner.backend import trainer_client
    client = trainer_client()
    job = client.train(runtime="torch-distributed", trainer=CustomTrainer(func=train))
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from kubeflow.common import constants as common_constants
from kubeflow.trainer import LocalProcessBackendConfig as SdkLocalConfig
from kubeflow.trainer import TrainerClient
from kubeflow.trainer.backends.base import RuntimeBackend
from kubeflow.trainer.constants import constants
from kubeflow.trainer.types import types
from packaging.requirements import Requirement
from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from envs import EnvError, IndexConfig
from envs.log import get_logger
from envs.requirements import merge, name_of, parse, parse_all
from runner import job as jobs
from runner.logs import as_text
from runner.sandbox import Mount, SandboxPolicy
from runner.settings import RunnerSettings, split_list
from runner.spec import FunctionEntry, JobSpec, LockedSet
from runner.store import JobRecord, JobStore
from runner.units import parse_size
from runner.warm.pool import Pool

_log = get_logger("runner.backend")

STATUSES = {
    constants.TRAINJOB_CREATED,
    constants.TRAINJOB_RUNNING,
    constants.TRAINJOB_COMPLETE,
    constants.TRAINJOB_FAILED,
}


class LocalProcessBackendConfig(RunnerSettings):
    """The SDK's `cleanup_venv`, plus every runner setting (`RUNNER_*` variables apply)."""

    cleanup_venv: bool = True
    """Remove the job's scratch directory when it ends. Cached envs stay: they are shared."""
    volumes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host paths every job of this backend sees, `SRC[:DST][:ro|rw]` (read-only unless rw),
    as a container backend's volumes; added to the settings' `mounts`."""

    torchrun_agent: bool = False
    """Run one-node, one-rank torch jobs under torchrun's agent too. By default their rank
    starts directly, with the variables torchrun gives it (`RANK`, `LOCAL_RANK`,
    `WORLD_SIZE`, `MASTER_ADDR`/`MASTER_PORT`, `TORCHELASTIC_RUN_ID`, ...): about a second
    less per job. Jobs of several ranks or nodes always run under torchrun."""

    _split_volumes = field_validator("volumes", mode="before")(split_list)

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for volume in value:
            Mount.parse(volume)  # a missing source is refused when the backend is made
        return value

    def policy(self) -> SandboxPolicy:
        policy = super().policy()
        mounts = (*policy.mounts, *(Mount.parse(v) for v in self.volumes))
        return policy.model_copy(update={"mounts": mounts})


@dataclass(frozen=True)
class LocalRuntime:
    name: str
    framework: str
    packages: tuple[str, ...]

    def to_sdk(self) -> types.Runtime:
        trainer = types.RuntimeTrainer(
            trainer_type=types.TrainerType.CUSTOM_TRAINER,
            framework=self.framework,
            num_nodes=1,
            device=common_constants.UNKNOWN,
            device_count=common_constants.UNKNOWN,
            image="local",
        )
        trainer.set_command(("torchrun",) if self.framework == "torch" else ("python",))
        return types.Runtime(
            name=self.name, trainer=trainer, kind=types.RuntimeKind.TRAINING_RUNTIME
        )


TORCH_RUNTIME_PACKAGES = ("torch==2.13.0", "numpy")
"""What the cluster's `torch-distributed` runtime image holds (pytorch/pytorch:2.13.0-...):
locally, the cached env that trainers' `packages_to_install` layer over."""

RUNTIMES = {
    rt.name: rt
    for rt in [LocalRuntime(constants.DEFAULT_TRAINING_RUNTIME, "torch", TORCH_RUNTIME_PACKAGES)]
}


def runtime_torch(name: str) -> str | None:
    """The torch the cluster runtime `name`'s image holds (`torch==2.13.0`), if it is known."""
    runtime = RUNTIMES.get(name)
    torch = [p for p in runtime.packages if name_of(parse(p)) == "torch"] if runtime else []
    return torch[0] if torch else None


def gpus_per_node(resources: dict[str, Any] | None) -> int:
    """`resources_per_node["gpu"]` (or `"nvidia.com/gpu"`, as a pod asks): GPUs per node."""
    resources = resources or {}
    value = resources.get("gpu", resources.get("nvidia.com/gpu"))
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        raise ValueError(f"resources_per_node gpu {value!r} is not a whole number") from None


def cpus_per_node(resources: dict[str, Any] | None) -> float:
    """`resources_per_node["cpu"]` (`2`, `"1.5"`, `"500m"`): CPUs per node, 0 if not asked."""
    cpu = (resources or {}).get("cpu")
    if cpu is None:
        return 0
    text = str(cpu)
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ValueError(f"resources_per_node cpu {cpu!r} is not a number of CPUs") from None


def ranks_per_node(resources: dict[str, Any] | None) -> int:
    """Local ranks from `resources_per_node`: one per GPU asked for, else one per whole CPU."""
    return gpus_per_node(resources) or max(1, int(cpus_per_node(resources)))


def _layering(
    runtime: LocalRuntime, wanted: list[Requirement], locked: bool, base_python: bool
) -> dict[str, Any]:
    """The job's packages, as on the cluster: the trainer's `packages_to_install` go on top
    of the runtime's (torch), which are a cached env of their own, built once and shared.

    A lockfile is the whole env; a trainer that names a runtime package (another torch)
    gets one full env, its pins winning, as before; over a base python nothing is merged.
    """
    base = parse_all(runtime.packages)
    if locked or base_python:
        return {"requirements": wanted}
    if not wanted or {name_of(r) for r in wanted} & {name_of(r) for r in base}:
        return {"requirements": merge(base, wanted)}
    return {"requirements": wanted, "base_packages": base}


LOCKFILE_KEY = "sandbox_runner_lockfile"


@dataclass
class Lockfile:
    """A train() option: run the job in exactly this lock, as `runner train --lockfile`.

    `client.train(runtime=..., trainer=CustomTrainer(func=...), options=[Lockfile("pylock.toml")])`
    The file (pylock.toml, pixi.lock, conda-lock.yml or a hashed requirements file) is
    read and checked when train() is called; packages_to_install must then be empty.
    `environment`: a pixi.lock environment (`default`) or conda-lock category (`main`).
    """

    path: str
    environment: str | None = None

    def __call__(self, job_spec: dict[str, Any], trainer: Any, backend: Any) -> None:
        cfg = backend.cfg if isinstance(backend, LocalProcessBackend) else RunnerSettings()
        try:
            job_spec[LOCKFILE_KEY] = LockedSet.read(self.path, cfg, self.environment)
        except EnvError as exc:
            raise ValueError(str(exc)) from None


def _explicit_urls(urls: list[str] | None) -> list[str]:
    """`pip_index_urls` as the user chose them: the SDK's default (PyPI) is no choice.

    An explicit choice overrides the runner's settings and PIP_* variables; the
    dataclass default must not, or every job would undo the user's mirror.
    """
    from kubeflow.trainer.constants.constants import DEFAULT_PIP_INDEX_URLS

    return [] if not urls or list(urls) == list(DEFAULT_PIP_INDEX_URLS) else list(urls)


def sandbox_policy(cfg: RunnerSettings, resources: dict[str, Any] | None) -> SandboxPolicy:
    """The settings' sandbox, with `resources_per_node["memory"]` (`"4Gi"`) as its memory limit."""
    policy = cfg.policy()
    memory = (resources or {}).get("memory")
    if memory is None:
        return policy
    try:
        return SandboxPolicy.model_validate(
            {**policy.model_dump(), "memory": parse_size(str(memory))}
        )
    except ValueError as exc:
        raise ValueError(f"resources_per_node memory {memory!r} is invalid: {exc}") from None


class LocalProcessBackend(RuntimeBackend):
    """The SDK's RuntimeBackend, running jobs as sandboxed process trees in cached envs."""

    def __init__(self, cfg: LocalProcessBackendConfig | None = None) -> None:
        self.cfg = cfg or LocalProcessBackendConfig()
        self.store = JobStore(self.cfg.state_dir)
        self._threads: dict[str, threading.Thread] = {}
        self._warm = Pool(self.store, self.cfg)

    def standbys(self) -> list[dict[str, Any]]:
        """The standbys this backend keeps for its next jobs (env, preloads, memory, age)."""
        return self._warm.listing()

    # -- runtimes ------------------------------------------------------------------

    def list_runtimes(self) -> list[types.Runtime]:
        return [rt.to_sdk() for rt in RUNTIMES.values()]

    def get_runtime(self, name: str) -> types.Runtime:
        if name not in RUNTIMES:
            raise ValueError(f"Runtime '{name}' not found.")
        return RUNTIMES[name].to_sdk()

    def get_runtime_packages(self, runtime: types.Runtime) -> list[str]:
        if runtime.name not in RUNTIMES:
            raise ValueError(f"Runtime '{runtime.name}' not found.")
        return list(RUNTIMES[runtime.name].packages)

    # -- jobs ----------------------------------------------------------------------

    def train(
        self,
        runtime: str | types.Runtime | None = None,
        initializer: types.Initializer | None = None,
        trainer: types.CustomTrainer
        | types.CustomTrainerContainer
        | types.BuiltinTrainer
        | None = None,
        options: list[Any] | None = None,
    ) -> str:
        """Validate everything, record the job, start it in a thread, return its name."""
        if runtime is None:
            raise ValueError("Runtime must be provided for LocalProcessBackend")
        if isinstance(runtime, str):
            runtime = self.get_runtime(runtime)
        local = RUNTIMES.get(runtime.name)
        if local is None:
            raise ValueError(f"Runtime '{runtime.name}' not found.")
        job_spec: dict[str, Any] = {}
        for option in options or []:
            option(job_spec, trainer, self)
        if not isinstance(trainer, types.CustomTrainer):
            raise ValueError("CustomTrainer must be set with LocalProcessBackend")
        if initializer is not None:
            raise ValueError("Initializers are not supported by LocalProcessBackend")
        locked: LockedSet | None = job_spec.get(LOCKFILE_KEY)
        wanted = parse_all(trainer.packages_to_install or [])
        fields: dict[str, Any] = {
            "entry": FunctionEntry.of(trainer.func, trainer.func_args),
            **_layering(local, wanted, locked is not None, self.cfg.base_python is not None),
            "lockfile": locked,
            "index": IndexConfig.from_urls(_explicit_urls(trainer.pip_index_urls)).labelled(
                "pip_index_urls"
            ),
            "env": dict(trainer.env or {}),
            "framework": local.framework,
            "launcher": "torchrun" if self.cfg.torchrun_agent else "direct",
            "nproc_per_node": ranks_per_node(trainer.resources_per_node),
            "gpus": gpus_per_node(trainer.resources_per_node),
            "cpus": math.ceil(cpus_per_node(trainer.resources_per_node)),
            "num_nodes": trainer.num_nodes or runtime.trainer.num_nodes or 1,
            "runtime": runtime.name,
            "base_python": str(self.cfg.base_python) if self.cfg.base_python else None,
            "sandbox": sandbox_policy(self.cfg, trainer.resources_per_node),
        }
        name = job_spec.get("metadata", {}).get("name")
        if name:
            fields["name"] = name
        spec = JobSpec.create(**fields)
        jobs.preflight(self.store, self.cfg, spec)  # strict mode, unusable folders: named first
        standby = None if name else self._warm.take(spec)
        if standby is not None:  # the job takes its name: its folders are the standby's
            spec = spec.model_copy(update={"name": standby.name})
        try:
            self.store.create(
                spec, owner=jobs.this_process(), reserved=standby.tag if standby else None
            )
        except BaseException:
            if standby is not None:
                self._warm.release(standby)
            raise
        thread = threading.Thread(target=self._run, args=(spec.name,), name=f"job-{spec.name}")
        self._threads[spec.name] = thread
        thread.start()
        return spec.name

    def _run(self, name: str) -> None:
        jobs.execute(self.store, name, self.cfg, cleanup=self.cfg.cleanup_venv, warm=self._warm)

    def _record(self, name: str) -> JobRecord:
        if not self.store.dir(name).exists():
            raise ValueError(f"No TrainJob with name {name}")
        return self.store.load(name)

    def _trainjob(self, record: JobRecord) -> types.TrainJob:
        spec = record.spec
        # a job started from the CLI has no SDK runtime: describe it by what it runs
        local = RUNTIMES.get(spec.runtime or "") or LocalRuntime("cli", spec.framework, ())
        codes = {s.name: s.exit_code for s in record.steps}
        steps = []
        for node in range(spec.num_nodes):
            step = f"{constants.NODE}-{node}"
            status: str = record.status
            if record.done and codes.get(step) is not None:
                status = (
                    constants.TRAINJOB_COMPLETE if codes[step] == 0 else constants.TRAINJOB_FAILED
                )
            steps.append(
                types.Step(
                    name=step,
                    status=status,
                    pod_name=step,
                    device="cpu",
                    device_count=str(spec.nproc_per_node),
                )
            )
        return types.TrainJob(
            name=record.name,
            runtime=local.to_sdk(),
            steps=steps,
            num_nodes=spec.num_nodes,
            creation_timestamp=record.created,
            status=record.status,
        )

    def list_jobs(self, runtime: types.Runtime | None = None) -> list[types.TrainJob]:
        records, broken = self.store.scan()
        for problem in broken:  # the others are listed all the same
            _log.warning("job.unreadable", error=str(problem))
        return [
            self._trainjob(r) for r in records if runtime is None or r.spec.runtime == runtime.name
        ]

    def export_trainjob(
        self, name: str, *, runtime: str | None = None, force: bool = False, resolve: bool = False
    ) -> dict[str, Any]:
        """The job as a Kubeflow TrainJob (a dict: `yaml.safe_dump` it for `kubectl apply -f`)
        that installs exactly the lock it ran in and runs the same function; notes (a package
        that came from a local mirror, say) are logged as `export.note` warnings."""
        from runner.export import DEFAULT_RUNTIME, trainjob

        record = self._record(name)
        chosen = runtime or record.spec.runtime or DEFAULT_RUNTIME
        doc, notes = trainjob(
            self.cfg,
            record,
            runtime=chosen,
            runtime_torch=runtime_torch(chosen),
            force=force,
            resolve=resolve,
        )
        for note in notes:
            _log.warning("export.note", job=name, note=note)
        return doc

    def get_job(self, name: str) -> types.TrainJob:
        return self._trainjob(self._record(name))

    def get_job_logs(
        self,
        name: str,
        follow: bool = False,
        step: str = constants.NODE + "-0",
    ) -> Iterator[str]:
        """The step's lines as the job printed them; with `follow`, as they arrive."""
        spec = self._record(name).spec
        ranks = spec.nproc_per_node * spec.num_nodes > 1
        pieces: dict[str, str] = {}  # per stream: a line given in pieces, so far
        for record in self.store.records(name, follow=follow):
            if record["event"] == "output" and record.get("step") == step:
                stream = str(record.get("stream"))
                line = pieces.pop(stream, "") + as_text(record, ranks)
                if record.get("partial"):
                    pieces[stream] = line
                else:
                    yield line
            elif record["level"] == "error":  # why the job could not run, in its own words
                yield f"[runner] {record['event']}: {record.get('error', '')}"

    def get_job_events(self, name: str) -> list[types.Event]:
        """The runner's events for the job (env.hit, job.start, job.exit, ...)."""
        self._record(name)
        return [
            types.Event(
                involved_object_kind=constants.TRAINJOB_KIND,
                involved_object_name=r.get("step", name),
                message=", ".join(f"{k}={v}" for k, v in r.items() if k not in _EVENT_KEYS),
                reason=r["event"],
                event_time=r["timestamp"],
            )
            for r in self.store.records(name)
            if r["event"] != "output"
        ]

    def wait_for_job_status(
        self,
        name: str,
        status: set[str] = {constants.TRAINJOB_COMPLETE},  # noqa: B006 - the SDK's signature
        timeout: int = 600,
        polling_interval: int = 2,
        callbacks: list[Callable[[types.TrainJob], None]] | None = None,
    ) -> types.TrainJob:
        if not status.issubset(STATUSES):
            raise ValueError(f"Expected status {status} must be a subset of {STATUSES}")
        if polling_interval <= 0:
            raise ValueError(
                "Polling interval must be a positive number, "
                f"got polling_interval={polling_interval}"
            )
        if polling_interval >= timeout:
            raise ValueError(
                "Polling interval must be strictly less than timeout. "
                f"Received polling_interval={polling_interval}, timeout={timeout}"
            )
        self._record(name)
        for _ in range(round(timeout / polling_interval)):
            trainjob = self.get_job(name)
            for callback in callbacks or []:
                callback(trainjob)
            if constants.TRAINJOB_FAILED not in status and trainjob.status == "Failed":
                reason = self.store.load(name).reason
                raise RuntimeError(f"TrainJob {name} is Failed: {reason}; see get_job_logs()")
            if trainjob.status in status:
                return trainjob
            time.sleep(polling_interval)
        raise TimeoutError(f"Timeout waiting for TrainJob {name} to reach status: {status}")

    def delete_job(self, name: str) -> None:
        """Cancel the job (no process of it survives) and forget it."""
        self._record(name)
        jobs.cancel(self.store, name, self.cfg.cancel_grace)
        thread = self._threads.pop(name, None)
        if thread is not None:
            thread.join()
        self.store.delete(name)


_EVENT_KEYS = {"timestamp", "level", "event", "job", "step"}


def trainer_client(cfg: LocalProcessBackendConfig | None = None) -> TrainerClient:
    """The SDK's own `TrainerClient`, with this backend behind every method."""
    client = TrainerClient(backend_config=SdkLocalConfig())
    client.backend = LocalProcessBackend(cfg)  # type: ignore[assignment] # the SDK's own plug
    return client
