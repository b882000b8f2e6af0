"""RunnerSettings: the runner's configuration, read once from `RUNNER_*` variables.

Read at the edge (CLI start, backend construction) and passed down; nothing
deeper in the code reads the environment for configuration.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from envs import IndexConfig
from envs.spec import Connection
from runner import gpus as inventory
from runner.gpus import Gpu
from runner.sandbox import Mount, SandboxPolicy
from runner.units import parse_size

LogFormat = Literal["text", "json"]

APP = "sandbox-runner"


def split_list(value: object) -> object:
    """Lists from the environment are whitespace- or comma-separated, as pip's are."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class RunnerSettings(BaseSettings):
    """Everything the runner can be told; each field is `RUNNER_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RUNNER_", extra="ignore", env_ignore_empty=True)

    cache_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir(APP)),
        description="Root of the environment cache (and of uv's cache, for hardlinks).",
    )
    state_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_state_dir(APP)),
        description="Where job records and logs are kept.",
    )
    index_url: str | None = Field(default=None, description="Package index (default: PyPI).")
    extra_index_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    find_links: Annotated[list[str], NoDecode] = Field(default_factory=list)
    no_index: bool = False
    index_strategy: Literal["unsafe-best-match", "first-index", "unsafe-first-match"] | None = (
        Field(
            default=None,
            description="With several indexes: how a package on more than one is chosen "
            "(default: unsafe-best-match, as pip does; first-index: uv's own default, which "
            "guards against dependency confusion).",
        )
    )
    conda_mirrors: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Where conda packages are fetched instead of a channel, CHANNEL=MIRROR "
        "(https://conda.anaconda.org/conda-forge=file:///srv/conda-forge): the lock's hashes "
        "still apply.",
    )
    python: Path | None = Field(
        default=None, description="Interpreter for new environments (default: the runner's own)."
    )
    base_python: Path | None = Field(
        default=None,
        description="An interpreter whose installed packages (CUDA torch, say) every job's "
        "env is a layer over, used as they are.",
    )
    uv: str | None = Field(default=None, description="uv binary (default: the bundled one).")
    sandbox: Literal["auto", "strict", "off"] = Field(
        default="auto",
        description="auto: every layer this machine supports; strict: refuse if one is "
        "missing; off: environment allowlist only.",
    )
    sandbox_filesystem: bool = Field(
        default=True, description="Read-only env, cache and system; writable job dir only."
    )
    network: bool = Field(default=True, description="False: loopback only, no other network.")
    mounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host paths every job sees, SRC[:DST][:ro|rw] (read-only unless rw).",
    )
    data_cache: bool = Field(
        default=True,
        description="Point XDG_CACHE_HOME, HF_HOME and TORCH_HOME at a data cache jobs share.",
    )
    data_dir: Path | None = Field(
        default=None, description="The data cache (default: `data` in the cache dir)."
    )
    memory_limit: str | None = Field(
        default=None,
        description="Memory per node, 4G: a cgroup where one can be made, else address space "
        "per process.",
    )
    cpu_time_limit: int | None = Field(default=None, gt=0, description="CPU seconds.")
    open_files_limit: int | None = Field(default=None, gt=0)
    processes_limit: int | None = Field(
        default=None, gt=0, description="Processes per node: a cgroup, else RLIMIT_NPROC."
    )
    gpus: str = Field(
        default="all",
        description="GPUs jobs may get: all, none, or indices/UUIDs (0,2); within the "
        "caller's own CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES.",
    )
    device_root: Path = Field(
        default=Path("/"),
        description="Where the GPU driver's files and device nodes are read (tests, chroots).",
    )
    bwrap: str | None = Field(
        default_factory=lambda: shutil.which("bwrap"), description="bubblewrap binary."
    )
    job_user: str = Field(
        default="sandbox-runner",
        min_length=1,
        description="Who root's jobs run as: a user's name or uid (sandbox-runner, a system "
        "user made on first use); root keeps uid 0 inside, without capabilities, and the "
        "job's sandbox.degraded says so. An ordinary user's jobs run as that user.",
    )
    warm: bool = Field(
        default=True,
        description="Keep a standby for the next job of an env: an interpreter already in "
        "its sandbox, with torch (and `preload`) imported and warmed (the SDK backend).",
    )
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Modules a standby imports before its job, besides torch for torch "
        "jobs (numpy,pandas).",
    )
    warm_memory: str = Field(
        default="4G",
        description="What idle standbys may hold in memory, all together (resident); the "
        "oldest goes first.",
    )
    warm_idle: float = Field(
        default=600.0, gt=0, description="Seconds after which an unused standby exits."
    )
    server: bool = Field(
        default=True,
        description="Send commands to a resident runner that holds the runner imported "
        "(started by the first command); off: every command runs in its own process.",
    )
    server_idle: float = Field(
        default=900.0, gt=0, description="Seconds after which an unused resident runner exits."
    )
    cancel_grace: float = Field(
        default=5.0, gt=0, description="Seconds between TERM and KILL when a job is ended."
    )
    log_format: LogFormat = Field(
        default="text",
        description="What the runner prints: `text`, lines for people (on a terminal or "
        "piped alike), or `json`, one JSON record per line.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The least level of the runner's events it prints."
    )

    _split_lists = field_validator(
        "extra_index_urls", "find_links", "mounts", "conda_mirrors", "preload", mode="before"
    )(split_list)

    @field_validator("memory_limit", "warm_memory")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_size(value)  # refuse a bad size when settings are read, not at job start
        return value

    @field_validator("conda_mirrors")
    @classmethod
    def _mirrors(cls, value: list[str]) -> list[str]:
        for entry in value:
            channel, sep, mirror = entry.partition("=")
            if not (sep and "://" in channel and "://" in mirror):
                raise ValueError(
                    f"conda mirror {entry!r} is not CHANNEL=MIRROR with two URLs "
                    "(https://conda.anaconda.org/conda-forge=file:///srv/conda-forge)"
                )
        return value

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: list[str]) -> list[str]:
        for mount in value:
            Mount.parse(mount)  # a missing source is refused when settings are read
        return value

    def policy(self) -> SandboxPolicy:
        return SandboxPolicy(
            mode=self.sandbox,
            filesystem=self.sandbox_filesystem,
            network=self.network,
            data_cache=self.data_cache,
            mounts=tuple(Mount.parse(m) for m in self.mounts),
            memory=parse_size(self.memory_limit) if self.memory_limit else None,
            cpu_seconds=self.cpu_time_limit,
            open_files=self.open_files_limit,
            processes=self.processes_limit,
            job_user=self.job_user,
        )

    def gpu_pool(self) -> list[Gpu]:
        """The GPUs jobs draw from: the machine's, as `gpus` and the caller's variables allow."""
        return inventory.pool(inventory.scan(self.device_root), self.gpus, os.environ)

    @property
    def leases_dir(self) -> Path:
        """Where GPUs are held by their jobs, and jobs queue for them."""
        return self.state_dir / "leases"

    @property
    def data_cache_dir(self) -> Path:
        """The data cache jobs share (downloads of models and datasets)."""
        return self.data_dir or self.cache_dir / "data"

    def index(self, environ: Mapping[str, str] | None = None) -> IndexConfig:
        """The settings' index layer over what pip is configured with (files, `PIP_*`)."""
        mine = IndexConfig(
            index_url=self.index_url,
            extra_index_urls=tuple(self.extra_index_urls),
            find_links=tuple(self.find_links),
            no_index=self.no_index,
            index_strategy=self.index_strategy,
            connection=Connection(
                conda_mirrors=tuple(
                    (c, m) for c, _, m in (e.partition("=") for e in self.conda_mirrors)
                )
            ),
        ).labelled(_SETTING_NAMES)
        return IndexConfig.layered(
            mine, IndexConfig.from_pip(os.environ if environ is None else environ)
        )


def problems(exc: ValidationError) -> str:
    """A settings error in one line: each bad variable, the value it holds, what is wanted."""
    said = []
    for error in exc.errors():
        name = f"RUNNER_{str(error['loc'][0]).upper()}" if error["loc"] else "RUNNER_*"
        wanted = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        said.append(
            f"{name}={given!r}: {wanted}" if isinstance(given, str) else f"{name}: {wanted}"
        )
    return "invalid setting " + "; ".join(said)


_SETTING_NAMES = {
    "index_url": "RUNNER_INDEX_URL",
    "extra_index_urls": "RUNNER_EXTRA_INDEX_URLS",
    "find_links": "RUNNER_FIND_LINKS",
    "no_index": "RUNNER_NO_INDEX",
    "index_strategy": "RUNNER_INDEX_STRATEGY",
    "conda_mirrors": "RUNNER_CONDA_MIRRORS",
}
"""Where each index option of the settings comes from, for `runner config`."""
