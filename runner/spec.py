"""JobSpec: what a job is, validated once at the edge, and the EnvSpec it needs.

Everything a front-end (CLI, SDK backend) accepts becomes a JobSpec before
anything is built or spawned; invalid input raises InvalidJobError (or the
envs' requirement errors) naming the bad value and what would be accepted.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import secrets
import string
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from packaging.requirements import Requirement
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from envs import EnvSpec, IndexConfig, Interpreter
from envs.base import probe as base_probe
from envs.errors import EnvError
from envs.requirements import check_unique, name_of, parse
from runner.errors import InvalidJobError
from runner.sandbox import SandboxPolicy
from runner.settings import RunnerSettings

if TYPE_CHECKING:
    from envs import EnvCache
    from envs.lockfile import Lock

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Req = Annotated[
    Requirement,
    BeforeValidator(lambda v: v if isinstance(v, Requirement) else parse(v)),
    PlainSerializer(str, return_type=str),
]


def new_name() -> str:
    """A fresh job name in the Kubeflow style: a letter, then 11 hex digits."""
    return secrets.choice(string.ascii_lowercase) + secrets.token_hex(6)[:11]


class FunctionEntry(BaseModel):
    """A training function: its source, called as `func(**args)` like the cluster does."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["function"] = "function"
    source: str
    function: str
    args: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, func: Callable[..., Any], args: Mapping[str, Any] | None = None) -> FunctionEntry:
        if not inspect.isfunction(func):
            raise InvalidJobError(
                f"func must be a plain Python function, got {type(func).__name__} {func!r}"
            )
        if func.__name__ == "<lambda>":
            raise InvalidJobError(
                "func is a lambda, whose source cannot be sent to a job; "
                "define it with `def` at the top level of a module"
            )
        try:
            source = textwrap.dedent(inspect.getsource(func))
        except (OSError, TypeError) as exc:
            raise InvalidJobError(
                f"cannot read the source of function {func.__qualname__!r} ({exc}); "
                "define it in a .py file or a notebook cell"
            ) from None
        if args is not None and not isinstance(args, Mapping):
            raise InvalidJobError(
                f"func_args is a {type(args).__name__}, not a dict: the function is called as "
                "func(**func_args), so give its arguments by name ({'lr': 0.1})"
            )
        args = dict(args or {})
        if not all(isinstance(k, str) for k in args):
            raise InvalidJobError("func_args keys must be strings (they become keyword arguments)")
        for key, value in args.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidJobError(
                    f"func_args[{key!r}] is not JSON-serializable ({exc}); arguments travel as "
                    "JSON: use numbers, strings, booleans, lists and dicts"
                ) from None
        return cls(source=source, function=func.__name__, args=args)


class ScriptEntry(BaseModel):
    """A script file or a module (`python -m`), with its arguments."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["script", "module"]
    target: str
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    """For a module: the folder it was run from, where it is found (read-only in the sandbox)."""

    @model_validator(mode="after")
    def _exists(self) -> ScriptEntry:
        if self.kind == "script" and not Path(self.target).is_file():
            raise ValueError(f"script {self.target!r} does not exist")
        if self.kind == "module" and not re.fullmatch(r"[A-Za-z_][\w.]*", self.target):
            raise ValueError(f"module name {self.target!r} is not a dotted Python name")
        return self


class LockedSet(BaseModel):
    """A lockfile the job runs in exactly, kept in the job's record: nothing is re-resolved."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["pylock", "requirements", "conda"]
    text: str
    source: str
    """The file it was read from, for people."""

    @classmethod
    def read(
        cls,
        path: str | os.PathLike[str],
        settings: RunnerSettings,
        environment: str | None = None,
    ) -> LockedSet:
        """Read any lockfile format for the interpreter of new envs; one for another Python
        or platform is refused. `environment`: of a pixi.lock (`default`), or a conda-lock
        category (`main`). What a slow reader made of it is kept in the cache."""
        from envs import formats

        memo = Path(settings.cache_dir).expanduser() / formats.MEMO
        lock = formats.read(Path(path), Interpreter.at(settings.python), environment, memo)
        return cls(kind=lock.kind, text=lock.text, source=str(Path(path).resolve()))

    @property
    def lock(self) -> Lock:
        """The lock; a relative file `path` in it is relative to the lockfile's folder."""
        from envs.lockfile import Lock

        return Lock(self.text, self.kind, base=str(Path(self.source).parent))


class JobSpec(BaseModel):
    """One job, complete: nothing later re-reads the user's raw input."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(default_factory=new_name)
    entry: Annotated[FunctionEntry | ScriptEntry, Field(discriminator="kind")]
    requirements: tuple[Req, ...] = ()
    index: IndexConfig = IndexConfig()
    env: dict[str, str] = Field(default_factory=dict)
    framework: Literal["torch", "python"] = "python"
    launcher: Literal["torchrun", "direct"] = "torchrun"
    """Torch jobs of one node and one rank: `direct` starts the rank itself, with the
    variables torchrun gives its workers, instead of torchrun's agent (which imports torch
    before the rank does, and takes most of a second to end)."""
    nproc_per_node: int = Field(default=1, ge=1, le=1024)
    num_nodes: int = Field(default=1, ge=1, le=64)
    gpus: int = Field(default=0, ge=0, le=64)
    """GPUs per node."""
    cpus: int = Field(default=0, ge=0, le=4096)
    """CPU cores per node, a set of the node's own (0: any, shared)."""
    gpu_ids: tuple[str, ...] = ()
    """The GPUs the job named (indices or UUIDs), split among its nodes; else any free ones."""
    timeout: float | None = Field(default=None, gt=0)
    runtime: str | None = None
    sandbox: SandboxPolicy | None = None
    """None: the runner's settings decide."""
    lockfile: LockedSet | None = None
    """Run in exactly this lock instead of resolving `requirements`."""
    base_python: str | None = None
    """An interpreter whose installed packages the job's env is a layer over."""
    base_packages: tuple[Req, ...] = ()
    """A cached env of these packages (a runtime's) is the base the job's env layers over."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"job name {value!r} is invalid: use 1-63 lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not ENV_KEY_RE.match(key):
                raise ValueError(
                    f"environment variable name {key!r} is invalid: use letters, digits and '_', "
                    "not starting with a digit"
                )
        return value

    @field_validator("requirements")
    @classmethod
    def _unique(cls, value: tuple[Requirement, ...]) -> tuple[Requirement, ...]:
        check_unique(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> JobSpec:
        if self.gpu_ids and len(self.gpu_ids) != self.gpus * self.num_nodes:
            raise ValueError(
                f"{len(self.gpu_ids)} GPUs named for {self.num_nodes} nodes: name the same "
                "number for each node"
            )
        if self.framework != "torch" and (self.num_nodes > 1 or self.nproc_per_node > 1):
            raise ValueError(
                "several processes per node or several nodes need torchrun: "
                "use framework 'torch' (and a torch requirement)"
            )
        if self.lockfile and self.requirements:
            raise ValueError(
                "give packages or a lockfile, not both: the lockfile is the whole environment"
            )
        if (
            self.framework == "torch"
            and not {"torch", "pytorch"} & self._names()  # pip's, conda's
            and not self._base_has("torch")
        ):
            if self.lockfile:
                raise ValueError(
                    f"torch jobs run under torchrun, which comes with torch, and the lockfile "
                    f"{self.lockfile.source!r} does not lock torch"
                )
            raise ValueError(
                "torch jobs run under torchrun, which comes with torch: add a torch "
                "requirement (`--with torch`, or a pinned one such as `torch==2.13.0`)"
            )
        return self

    def _base_has(self, name: str) -> bool:
        if name in {name_of(r) for r in self.base_packages}:
            return True
        return self.base_python is not None and name in base_probe(self.base_python).versions

    def _names(self) -> set[str]:
        """The names of every package the job's env holds, conda's too."""
        if self.lockfile:
            return {p.name for p in self.lockfile.lock.packages}
        return {name_of(r) for r in self.requirements}

    @property
    def packages(self) -> tuple[Requirement, ...]:
        """What the job's env holds as pip requirements: its requirements, or its lockfile's
        PyPI pins (conda packages are none: `_libgcc_mutex 0.1` or `openssl 1.1.1w` are no
        pip requirement, and rattler installs them)."""
        if self.lockfile:
            return tuple(parse(pin) for pin in self.lockfile.lock.pip_pins())
        return self.requirements

    @classmethod
    def create(cls, **fields: Any) -> JobSpec:
        """Validate, turning pydantic's report into one InvalidJobError with every problem."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise invalid_job(exc) from None


def invalid_job(exc: ValidationError) -> InvalidJobError:
    """pydantic's report on a job as one error naming every problem."""
    return InvalidJobError("invalid job: " + "; ".join(_describe(e) for e in exc.errors()))


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    ctx_error = error.get("ctx", {}).get("error")
    if isinstance(ctx_error, EnvError):
        message = str(ctx_error)
    return f"{where}: {message}" if where else message


def env_spec(
    settings: RunnerSettings,
    requirements: Sequence[str | Requirement],
    index: IndexConfig | None = None,
    base_python: str | None = None,
) -> EnvSpec:
    """The env for a package set: job index options over settings over pip's variables;
    with `base_python`, a layer over that interpreter's installed packages."""
    reqs = tuple(r if isinstance(r, Requirement) else parse(r) for r in requirements)
    return EnvSpec(
        requirements=reqs,
        index=IndexConfig.layered(index or IndexConfig(), settings.index(os.environ)),
        interpreter=Interpreter.at(base_python or settings.python),
        base=base_probe(base_python) if base_python else None,
    )


def open_cache(settings: RunnerSettings, *, writing: bool = False) -> EnvCache:
    """The cache; with `writing`, one that cannot be written is refused first, naming it."""
    from envs import EnvCache

    cache = EnvCache(settings.cache_dir, uv_binary=settings.uv)
    if writing:
        cache.check_writable()
    return cache
