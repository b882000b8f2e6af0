"""What a job asks of its sandbox (`SandboxPolicy`), and what a machine could not give (`Gap`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runner.errors import RunnerError


class SandboxUnavailableError(RunnerError):
    """`strict` was asked for and a layer cannot be enforced on this machine."""


class Gap(NamedTuple):
    """A layer asked for that this machine does not enforce: why, and how to get it."""

    layer: str
    cause: str
    fix: str | None = None


class Mount(BaseModel):
    """A host path the job sees: `SOURCE[:TARGET][:ro|rw]`, read-only unless `rw`."""

    model_config = ConfigDict(frozen=True)

    source: Path
    target: Path
    writable: bool = False

    @classmethod
    def parse(cls, text: str) -> Mount:
        """`SRC`, `SRC:DST`, `SRC:ro`, `SRC:DST:rw`; SRC must exist, relative to the cwd."""
        parts = text.split(":")
        mode = parts.pop() if len(parts) > 1 and parts[-1] in ("ro", "rw") else "ro"
        if not 1 <= len(parts) <= 2 or not all(parts):
            raise ValueError(f"mount {text!r} is not SOURCE[:TARGET][:ro|rw]")
        source = Path(parts[0]).expanduser().resolve()
        target = Path(parts[-1]).expanduser() if len(parts) == 2 else source
        return cls(source=source, target=target, writable=mode == "rw")

    @field_validator("source")
    @classmethod
    def _exists(cls, value: Path) -> Path:
        if not value.exists():
            raise ValueError(f"mount source {str(value)!r} does not exist")
        return value

    @field_validator("target")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute() or value == Path("/"):
            raise ValueError(f"mount target {str(value)!r} must be an absolute path other than /")
        if not value.exists() and Path("/tmp") not in value.parents:
            raise ValueError(
                f"mount target {str(value)!r} does not exist: the sandbox makes no folders in the "
                "read-only system; mount on a folder that exists, or under /tmp"
            )
        return value

    def __str__(self) -> str:
        return f"{self.source}:{self.target}:{'rw' if self.writable else 'ro'}"


class SandboxPolicy(BaseModel):
    """What to enforce around a job. Settings give the defaults; a job may override."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["auto", "strict", "off"] = "auto"
    filesystem: bool = True
    network: bool = True
    data_cache: bool = True
    """A per-user cache for downloads (HF_HOME, TORCH_HOME, ...) shared by jobs."""
    mounts: tuple[Mount, ...] = ()
    memory: int | None = Field(
        default=None, gt=0, description="Bytes per node (cgroup), else address space per process."
    )
    cpu_seconds: int | None = Field(default=None, gt=0)
    open_files: int | None = Field(default=None, gt=0)
    processes: int | None = Field(default=None, gt=0)
    job_user: str = Field(
        default="sandbox-runner",
        min_length=1,
        description="Who root's jobs run as (a user's name or uid); root: uid 0 inside.",
    )

    @field_validator("mounts", mode="before")
    @classmethod
    def _parse_mounts(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            return tuple(Mount.parse(v) if isinstance(v, str) else v for v in value)
        return value
