"""The identity layer: a job started by root runs as an unprivileged user, not as uid 0.

Which identity, and why a dedicated uid rather than a user namespace: inside a user
namespace that root makes, the job's uid still maps to root outside, so every root-owned
file (/etc/shadow, /proc/sys/...) stays the job's to read or write. Only a real
unprivileged uid loses them. So bubblewrap, as root, builds the job's view (it can reach
root's env and job folders), keeps only the capabilities to change uid, and runs
`setpriv`, which becomes the job's user with no groups, no capabilities, an empty bounding
set, and then runs the job. The job's own folders (work, TMPDIR, HOME, the data cache) are
given to that user; what is root's stays root's.

The user is `sandbox-runner`, a system user made on first use (as Docker makes `dockremap`
for its user-namespace remapping): one of its own, so no other service shares its uid.
`RUNNER_JOB_USER` names another (`nobody`, a uid); `root` keeps uid 0 inside, without
capabilities, and `sandbox.degraded` says so. An ordinary user's jobs run as that user.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runner.sandbox.layer import INSTALL_BWRAP, Host, Line, Place
from runner.sandbox.policy import Gap, SandboxPolicy, SandboxUnavailableError

DEFAULT_USER = "sandbox-runner"
LAYER = "an unprivileged identity (root's jobs run as uid 0, without capabilities)"
_making = threading.Lock()


@dataclass(frozen=True)
class Identity:
    """Who a job of root's runs as."""

    name: str
    uid: int
    gid: int
    note: str | None = None
    """Why it is not the user asked for (one could not be made)."""

    def cannot_read(
        self, path: Path, fresh: Iterable[Path], *, write: bool = False, at: Path | None = None
    ) -> str | None:
        """Why this user could not read (or write) `path` as the job's view shows it, at
        `at` (a mount's target; else its own path) (None: it can): the path itself, and the
        host's folders above where it is seen, but those the view makes (`fresh`: 0755)."""
        fresh = tuple(fresh)
        for folder in reversed((at or path).parents):
            if any(f == folder or f in folder.parents for f in fresh):
                break
            if not self._may(folder, 0o1):
                return f"{folder} is closed to it (mode {_mode(folder)})"
        need = (0o5 if path.is_dir() else 0o4) | (0o2 if write else 0)
        if not self._may(path, need):
            return f"{path} is not {'writable' if write else 'readable'} by it (mode {_mode(path)})"
        return None

    def _may(self, path: Path, bits: int) -> bool:
        st = path.stat()
        shift = 6 if st.st_uid == self.uid else 3 if st.st_gid == self.gid else 0
        return (st.st_mode >> shift) & bits == bits

    def own(self, *folders: Path) -> None:
        """Give the job's own folders to it (made by root, written by the job)."""
        for folder in folders:
            os.chown(folder, self.uid, self.gid)

    def own_tree(self, folder: Path) -> None:
        """Give a folder that jobs share (the data cache) to it, all it holds included, once:
        a cache that root's jobs filled as root before they ran as this user is theirs then."""
        if folder.stat().st_uid == self.uid:
            return
        for parent, dirs, files in os.walk(folder):
            for name in (*dirs, *files):
                os.lchown(os.path.join(parent, name), self.uid, self.gid)  # noqa: PTH118
        os.chown(folder, self.uid, self.gid)


def _mode(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mode & 0o7777:04o}, {st.st_uid}:{st.st_gid}"


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


@functools.cache
def resolve(name: str) -> Identity:
    """The identity `name` (a user's name or uid) stands for; the default user is made
    if missing, else `nobody` stands in for it (with a note saying why)."""
    if name.isdigit() and _lookup(name) is None:
        return Identity(name, int(name), int(name))  # a bare uid, as systemd's DynamicUser
    entry = _lookup(name)
    note = None
    if entry is None and name == DEFAULT_USER:
        with _making:
            said = _make_user(name)
        entry = _lookup(name)
        if entry is None:
            note = f"the user {name} could not be made ({said}); nobody stands in for it"
            entry = _lookup("nobody")
    if entry is None:
        raise SandboxUnavailableError(
            f"root's jobs are to run as {name!r} (RUNNER_JOB_USER), and there is no such user: "
            "create it, or unset RUNNER_JOB_USER"
        )
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, note)


def _make_user(name: str) -> str:
    """useradd's answer: a system user with a group of its own, no home, no login."""
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        return "useradd not found"
    argv = [useradd, "--system", "--user-group", "--no-create-home"]
    argv += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
    argv += ["--comment", "sandbox-runner jobs of root", name]
    try:
        done = subprocess.run([*argv], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return done.stderr.strip() or f"exit {done.returncode}"


def for_job(policy: SandboxPolicy, host: Host) -> Identity | None:
    """Who the job runs as when that is not the runner's own user; None: as the runner
    (not root, the sandbox off, or this layer not had: its gaps say why)."""
    if not host.root or policy.mode == "off" or any(Unprivileged().gaps(policy, host)):
        return None
    return resolve(policy.job_user)


class Unprivileged:
    """Root's jobs run as `sandbox-runner` (or `RUNNER_JOB_USER`), never as uid 0."""

    def gaps(self, policy: SandboxPolicy, host: Host) -> Iterable[Gap]:
        if not host.root or policy.mode == "off":
            return
        if host.bwrap is None:
            yield Gap(LAYER, host.problem or "bubblewrap not found", INSTALL_BWRAP)
        elif not policy.filesystem:  # the host's folders as they are: root's env is root's
            yield Gap(LAYER, "the file system view is off", "drop --no-sandbox-fs")
        elif not shutil.which("setpriv"):
            yield Gap(LAYER, "setpriv not found", "install util-linux's setpriv")
        elif resolve(policy.job_user).uid == 0:
            yield Gap(LAYER, f"RUNNER_JOB_USER is {policy.job_user}", "unset RUNNER_JOB_USER")

    def add(self, policy: SandboxPolicy, host: Host, place: Place, line: Line) -> None:
        who = place.user
        if not line.boxed or who is None:
            return
        # bubblewrap dropped every capability; these three only let setpriv leave uid 0
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
            line.inner += ["--cap-add", cap]
        line.inside += ["setpriv", f"--reuid={who.uid}", f"--regid={who.gid}", "--clear-groups"]
        line.inside += ["--inh-caps=-all", "--bounding-set=-all", "--"]
        line.env.update(USER=who.name, LOGNAME=who.name)
