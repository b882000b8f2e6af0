"""uv, the only thing that resolves and installs: spec -> lock, lock -> venv.

uv reads neither pip's configuration nor `PIP_*` variables, so every index
option is passed explicitly; `UV_*` variables from the caller's environment
are dropped so that nothing outside the spec can change what gets built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from envs import bytecode
from envs.base import PTH_FILE
from envs.errors import BuildError
from envs.files import site_packages
from envs.lockfile import Lock
from envs.log import get_logger
from envs.pipconfig import mask
from envs.proc import stream
from envs.progress import UvProgress
from envs.spec import EnvSpec, IndexConfig, Interpreter

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as Logger

_log = get_logger("envs.builder")


INSTALL_FILE = "install-requirements.txt"
"""What uv installs from, beside the lock while the env is built (see Lock.installable)."""

_KEEP_FROM_CALLER = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")
_PROXY = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def default_uv() -> str:
    """The uv binary shipped with the `uv` package this project depends on."""
    from uv import find_uv_bin

    return str(find_uv_bin())


def index_args(index: IndexConfig) -> list[str]:
    """uv's options for where packages come from and how to reach them."""
    args: list[str] = []
    if index.no_index:
        args.append("--no-index")
    elif index.index_url:
        args += ["--index-url", index.index_url]
    for url in index.extra_index_urls:
        args += ["--extra-index-url", url]
    for location in index.find_links:
        args += ["--find-links", location]
    if index.strategy:
        args += ["--index-strategy", index.strategy]
    for host in index.connection.trusted_hosts:
        args += ["--allow-insecure-host", host]
    return args


def connection_environ(index: IndexConfig) -> dict[str, str]:
    """What uv takes from its environment: the CA bundle (`uv run` has no `--cert`), a client
    certificate, a proxy, timeouts."""
    c = index.connection
    env = {
        "SSL_CERT_FILE": c.cert,
        "SSL_CLIENT_CERT": c.client_cert,
        "HTTP_PROXY": c.proxy,
        "HTTPS_PROXY": c.proxy,
        "UV_HTTP_TIMEOUT": c.timeout,
        "UV_HTTP_RETRIES": c.retries,
    }
    return {k: v for k, v in env.items() if v}


@dataclass(frozen=True)
class Uv:
    """One uv binary with its cache directory (on the same filesystem as the envs)."""

    binary: str
    cache_dir: Path

    def environ(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in (*_KEEP_FROM_CALLER, *_PROXY) if k in os.environ}
        env.update(
            UV_CACHE_DIR=str(self.cache_dir),
            UV_NO_CONFIG="1",
            UV_PYTHON_DOWNLOADS="never",
            UV_LINK_MODE="hardlink",
            NO_COLOR="1",
        )
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        what: str,
        cwd: Path,
        log: Logger | None = None,
        index: IndexConfig | None = None,
        on_line: Callable[[str], None] | None = None,
        on_received: Callable[[int], None] | None = None,
    ) -> None:
        """Run uv (reaching the sources as `index` says), each line it writes to stderr given
        to `on_line` as it comes; on failure raise BuildError with uv's own words."""
        argv = [self.binary, *args]
        (log or _log).debug("uv.run", argv=[mask(a) for a in argv])
        env = {**self.environ(), **(connection_environ(index) if index else {})}
        try:
            proc = stream(argv, on_line or (lambda _line: None), on_received, cwd=cwd, env=env)
        except OSError as exc:
            raise BuildError(f"cannot run uv at {self.binary!r}: {exc}") from None
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            # its progress lines (`Downloading ...`, `Prepared ...`) are not what went wrong
            errors = [i for i, ln in enumerate(said) if ln.startswith("error:")]
            lines = said[errors[0] :] if errors else said or ["no output"]
            detail = "\n".join(lines)
            cause = _cause(lines)
            raise BuildError(f"{what} failed: {cause}\n{detail}")


def _cause(lines: list[str]) -> str:
    """uv's error as one line: "error: Failed to download X" and "  cause: Hash mismatch for
    X" joined, each with the lines uv wrapped it onto (deeper, up to a blank or a hint)."""
    pieces: list[str] = []
    for raw in lines:
        text = raw.strip()
        if raw.startswith("error:") or text.startswith(("cause:", "Caused by:")):
            pieces.append(text.partition(":")[2].strip())
        elif pieces and text and not text.startswith(("hint:", "help:")) and raw[:1] == " ":
            pieces[-1] += f" {text}"
        elif pieces:
            break
    return ": ".join(pieces) or lines[0]


def _wanted(spec: EnvSpec) -> list[str]:
    """What to resolve: a layer leaves out what its base already holds as asked."""
    wanted = []
    for req in spec.requirements:
        held = spec.base.versions.get(canonicalize_name(req.name)) if spec.base else None
        if held and not req.extras and not req.url and req.specifier.contains(held, True):
            continue
        wanted.append(f"{req}\n")
    return wanted


def resolve(uv: Uv, spec: EnvSpec, workdir: Path, log: Logger | None = None) -> Lock:
    """Solve the spec into an exact lock with hashes; nothing is installed.

    A layer's packages are solved with its base's versions as constraints: a
    base package is never replaced (a pin against it fails here, naming both).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "requirements.in").write_text("".join(_wanted(spec)))
    constraints: list[str] = []
    if spec.base is not None:
        (workdir / "base-constraints.txt").write_text("".join(f"{p}\n" for p in spec.base.pins()))
        constraints = ["--constraint", "base-constraints.txt"]
    for path in spec.index.constraints:  # the user's (pip's `constraint`): caps, not requests
        constraints += ["--constraint", path]
    uv.run(
        [
            "pip",
            "compile",
            "requirements.in",
            "--format",
            "pylock.toml",
            "--generate-hashes",
            "--no-header",
            "--quiet",
            "--python",
            spec.interpreter.executable,
            *constraints,
            *index_args(spec.index),
            "--output-file",
            "pylock.toml",
        ],
        what=f"resolving {', '.join(str(r) for r in spec.requirements) or 'an empty set'}"
        + (f" over the base {spec.base.executable}" if spec.base else ""),
        cwd=workdir,
        log=log,
        index=spec.index,
    )
    return Lock((workdir / "pylock.toml").read_text())


def materialize(
    uv: Uv,
    lock: Lock,
    spec: EnvSpec,
    target: Path,
    objects: Path,
    log: Logger | None = None,
    *,
    final: Path,
    conda_cache: Path,
) -> None:
    """Create an environment at `target` holding exactly the lock, kept beside it.

    uv checks every file's hash and resolves nothing. Bytecode is compiled once
    per content and shared through `objects` (see `bytecode.py`).

    A pip lock makes a relocatable venv, because the build happens in a
    temporary directory and is published by renaming it: entry points such as
    `torchrun` must survive that. A conda lock makes a conda prefix (rattler,
    `conda.py`, with its package cache `conda_cache`) patched for `final`, where it
    is published, with its PyPI packages installed by uv into the prefix's own python.
    """
    if lock.unit.conda:
        from envs import conda

        mirrors = dict(spec.index.connection.conda_mirrors)
        conda.install(lock.conda, target, final, conda_cache, mirrors, log or _log)
        (log or _log).info("env.conda.installed", packages=len(lock.conda.conda))
    else:
        uv.run(
            [
                "venv",
                "--relocatable",
                "--quiet",
                "--python",
                spec.interpreter.executable,
                str(target),
            ],
            what="creating the virtual environment",
            cwd=target.parent,
            log=log,
        )
    (target / lock.filename).write_text(lock.text)
    if spec.base is not None:  # the base's packages, after the layer's own, copied nowhere
        site = site_packages(target)
        (site / PTH_FILE).write_text("".join(f"{d}\n" for d in spec.base.site_dirs))
    install = target / INSTALL_FILE
    install.write_text(
        lock.installable(spec.interpreter, skip=spec.base.provides if spec.base else None)
    )
    python = target / "bin" / "python"
    # a conda prefix holds packages uv did not install (conda's): add, never sync them away
    verb = ["install", "--no-deps"] if lock.unit.conda else ["sync"]
    if install.read_text():
        progress = UvProgress(log or _log, len(lock.packages))
        uv.run(
            [
                "pip",
                *verb,
                "--require-hashes",
                "--python",
                str(python),
                *index_args(spec.index),
                *(["-r"] if lock.unit.conda else []),
                INSTALL_FILE,
            ],
            what="installing the locked packages",
            cwd=target,
            log=log,
            index=spec.index,
            on_line=progress,
            on_received=progress.received,
        )
    install.unlink()
    if lock.unit.conda:
        relink_scripts(target, final)
    interpreter = Interpreter.at(python) if lock.unit.conda else spec.interpreter
    linked = bytecode.compile_tree(python, target, objects, interpreter.cache_tag)
    (log or _log).debug("env.bytecode", shared_modules=linked)


def relink_scripts(target: Path, final: Path) -> None:
    """Scripts uv wrote into a conda prefix name its python by the build path (in the shebang,
    or in a `/bin/sh` launcher where the path is too long for one): point them at the path
    the prefix is published at, as rattler did for conda's own files."""
    old, new = str(target).encode(), str(final).encode()
    for script in (target / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!") and old in data:
            script.write_bytes(data.replace(old, new))
