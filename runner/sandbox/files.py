"""The layers of what a job sees of the file system: the view, its HOME and data cache, mounts.

The view is the host's, read-only, with holes: a private /tmp; every home and
/run (sockets, agents, session buses) hidden; the runner's state dir and cache
hidden, but for the job's own env and its base; the user's folders the job
needs (its script's folder) read-only; its work folder, TMPDIR and HOME the
only places it writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from runner.sandbox.layer import INSTALL_BWRAP, Host, Line, Place
from runner.sandbox.policy import Gap, SandboxPolicy

SYSTEM_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs/ca-certificates.crt",
)
"""Files a job needs for DNS, time and TLS; where one is a link into a hidden folder (resolv.conf
into /run under systemd-resolved), its target is bound back, read-only."""


def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(path))


def _under(path: Path, folders: Iterable[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def private_folders() -> list[Path]:
    """What no job sees: every home (the runner's user's first) and /run, where sockets live."""
    candidates = [Path.home(), Path("/home"), Path("/root"), Path("/run"), Path("/var/run")]
    found = []
    for path in candidates:
        if path.is_dir() and not path.is_symlink() and _real(path) != Path("/"):
            found.append(_real(path))
    return list(dict.fromkeys(found))


class FileView:
    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if policy.mode != "off" and policy.filesystem and host.bwrap is None:
            yield Gap(
                "filesystem (read-only env and cache, private /tmp, homes, sockets and the "
                "runner's records hidden)",
                host.problem or "bubblewrap not found",
                INSTALL_BWRAP,
            )

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if not line.boxed:
            return
        if not policy.filesystem:
            line.inner += ["--bind", "/", "/"]
            return
        hidden = [Path("/tmp"), *private_folders()]
        args = ["--ro-bind", "/", "/"]
        for folder in hidden:
            args += ["--tmpfs", str(folder)]
        for name in SYSTEM_FILES:
            target = _real(name)
            if target != Path(name) and target.exists() and _under(target, hidden):
                args += ["--ro-bind", str(target), str(target)]
        for path in map(_real, place.shared):  # before the runner's folders: they may be inside
            if path.is_dir() and any(_under(private, [path]) for private in hidden):
                line.notes.append(
                    f"{path} is not shared with the job: it holds a home, /tmp or /run; "
                    "move the script into a folder of its own, or --mount what it needs"
                )
                continue
            args += ["--ro-bind", str(path), str(path)]
        for folder in place.hidden:
            if folder.is_dir():
                args += ["--tmpfs", str(_real(folder))]
        for folder in (*place.env_dirs, place.jobdir):
            args += ["--ro-bind", str(_real(folder)), str(_real(folder))]
        for folder in (place.workdir, place.tmpdir):
            args += ["--bind", str(_real(folder)), str(_real(folder))]
        line.inner += args


class Home:
    """A private, writable HOME for each job, and a per-user data cache shared by all of them,
    so that downloads (Hugging Face, torch hub) are reused; `data_cache: false` turns it off."""

    VARIABLES: ClassVar[dict[str, str]] = {
        "XDG_CACHE_HOME": "",
        "HF_HOME": "huggingface",
        "TORCH_HOME": "torch",
    }

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        return ()  # variables: every mode but off gets them; the view says what it hides

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if policy.mode == "off":
            return
        line.env["HOME"] = str(place.home)
        writable = [place.home]
        if policy.data_cache and place.data_cache is not None:
            for name, sub in self.VARIABLES.items():
                line.env[name] = str(place.data_cache / sub) if sub else str(place.data_cache)
            writable.append(place.data_cache)
        if line.boxed and policy.filesystem:
            for folder in writable:
                line.inner += ["--bind", str(_real(folder)), str(_real(folder))]


class Mounts:
    """Host paths the user named (`--mount SRC[:DST][:ro|rw]`), on top of everything else."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        for mount in policy.mounts:
            if policy.mode == "off":
                yield Gap(f"mount {mount}", "sandbox off")
            elif host.bwrap is None:
                yield Gap(f"mount {mount}", host.problem or "bubblewrap not found", INSTALL_BWRAP)

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        if not line.boxed:
            return
        for mount in policy.mounts:
            flag = "--bind" if mount.writable else "--ro-bind"
            line.inner += [flag, str(mount.source), str(mount.target)]
