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


def emptied() -> list[Path]:
    """What the view replaces with an empty tmpfs of the job's own: /tmp, every home, /run
    (and the runner's own folders, which the caller knows)."""
    return [Path("/tmp"), *private_folders()]


def holds_private(path: Path) -> bool:
    """A folder the view never shares, though the job's script is in it: it holds /tmp, a
    home or /run (the script is shared alone)."""
    return path.is_dir() and any(_under(private, [path]) for private in emptied())


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
        hidden = emptied()
        args = ["--ro-bind", "/", "/", "--perms", "1777", "--tmpfs", "/tmp"]  # as a real /tmp
        for folder in hidden[1:]:
            args += ["--tmpfs", str(folder)]
        for name in SYSTEM_FILES:
            target = _real(name)
            if target != Path(name) and target.exists() and _under(target, hidden):
                args += ["--ro-bind", str(target), str(target)]
        for path in map(_real, place.shared):  # before the runner's folders: they may be inside
            if holds_private(path):
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


_ONE = {"--tmpfs", "--dev", "--proc", "--dir", "--remount-ro", "--perms", "--seccomp"}
_ONE |= {"--info-fd", "--uid", "--gid", "--chdir", "--cap-add", "--cap-drop", "--hostname"}
_TWO = {"--bind", "--ro-bind", "--dev-bind", "--bind-try", "--ro-bind-try", "--dev-bind-try"}
_NEW_FS = {"--tmpfs", "--dev"}


def traversable(args: list[str]) -> list[str]:
    """bubblewrap's options with every folder it would make on the way to a mount point made
    0755 first: run by root, bubblewrap makes them 0700, where root's job, run as another
    user, could not pass through to its own env and folders (`--perms 0755 --dir`)."""
    out: list[str] = []
    fresh: list[Path] = []  # the empty file systems mounted so far: their folders are made
    known: set[Path] = set()
    i = 0
    while i < len(args):
        flag = args[i]
        width = 2 if flag in _TWO else 1 if flag in _ONE else 0
        dest = Path(args[i + width]) if width and flag in (_TWO | _NEW_FS | {"--proc"}) else None
        if dest is not None:
            base = max(
                (f for f in fresh if f in dest.parents), key=lambda f: len(f.parts), default=None
            )
            if base is not None:
                for parent in reversed(dest.parents):
                    if base in parent.parents and parent not in known:
                        out += ["--perms", "0755", "--dir", str(parent)]
                        known.add(parent)
            known.add(dest)
            if flag in _NEW_FS:
                fresh.append(dest)
        out += args[i : i + width + 1]
        i += width + 1
    return out
