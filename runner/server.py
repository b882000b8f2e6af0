"""The resident runner: one per user (per socket folder), holding the runner imported.

It accepts `runner` clients (`runner.client`) on a socket in a 0700 folder of the
user's, serves only its own uid (SO_PEERCRED), and forks a child per command. The
child takes the client's stdin, stdout and stderr, cwd, umask and environment and
runs the command as `runner` would in-process, then sends its exit code to the
client itself: the server holds nothing of a command once it forked it, so a server
killed mid-command (kill -9) ends no command, and a command killed ends no server.

It also keeps the standbys of `runner train`, each in a spare: a fork made after a
command's job started, which the next request like that command is handed to
(`runner.warm.served` says how and why).

It exits after `RUNNER_SERVER_IDLE` seconds with no request and no child, on
`runner server stop`, and when a client of other code asks (it retires, and that
client starts its own); its spares then end.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from runner.client import SOCKET_NAME, code_key, receive, send
from runner.warm import served

_PEER = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_SPARES = 4
"""Spares kept at most (each holds one standby); the oldest goes first."""
TAKE_WAIT = 2.0
"""Seconds a spare has to say it took a command handed to it (else a fresh fork runs it)."""


@dataclass
class Spare:
    """A fork holding a standby for the next request of `key` (`served.request_key`)."""

    pid: int
    sock: socket.socket
    key: str
    env: str
    born: float = field(default_factory=time.monotonic)
    standby: dict[str, Any] | None = None
    """What it said once its standby was ready (env, preloads, memory)."""

    def heard(self) -> None:
        """Read what it said since (without waiting)."""
        with contextlib.suppress(OSError, ValueError):
            while select.select([self.sock], [], [], 0)[0]:
                said, _ = receive(self.sock)
                if said is None:
                    return
                ready = said.get("ready")
                if isinstance(ready, dict):
                    self.standby = ready


def _preload() -> None:
    """Import what commands import, once, so that no command pays for it."""
    import importlib
    import pkgutil

    import envs
    import runner

    skip = {"runner.client", "runner.server", "runner.warm.program", "runner.cli.__main__"}
    for package in (runner, envs):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name not in skip:
                with contextlib.suppress(Exception):
                    importlib.import_module(module.name)
    # and what commands import when they run: help's wrapping, `envs`' uv, ascii output
    for name in (
        *("structlog", "structlog.dev", "rich.console", "rich.status", "dotenv", "ctypes"),
        *("click._textwrap", "uv", "encodings.ascii"),
    ):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # Out of the collector's sight: a collection in a command's child would write to every
    # object of the server's and so copy its pages (fork's copy-on-write), each command.
    gc.freeze()


def _compile_client() -> None:
    """Write the bytecode of the thin client, which every command loads first, even where
    Python was told to write none (`PYTHONDONTWRITEBYTECODE`, set in many images): compiled
    anew by each command, it costs ~7 ms of each (measured here)."""
    import importlib.util
    import py_compile

    import runner.client

    for source in (runner.__file__, runner.client.__file__):
        with contextlib.suppress(Exception):  # a read-only checkout: each compiles it
            if source:
                py_compile.compile(source, importlib.util.cache_from_source(source), doraise=True)


class Server:
    def __init__(self, where: Path, idle: float, lock: int = -1) -> None:
        self.where = where
        self.lock = lock
        """The fd holding the folder's lock: the server's alone, never a fork's (a command
        or a spare that outlives a killed server would keep the next one from starting)."""
        self.idle = idle
        self.key = code_key()
        self.children: set[int] = set()
        self.spares: dict[str, Spare] = {}
        self.blank: Spare | None = None
        """A fork made ahead, waiting for the next command of any kind: a command handed to
        it does not wait for the fork of the server (~3 ms of a served command, measured)."""
        self.pending: dict[int, dict[str, Any]] = {}
        """Spares asked for by commands still running (by pid): made when each has ended."""
        self.served = 0
        self.started = time.time()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = where / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a killed server's: the lock says none is running
        self.listener.bind(str(path))
        path.chmod(0o600)
        self.inode = path.stat().st_ino
        self.listener.listen(64)
        self.listener.settimeout(1.0)

    def run(self) -> None:
        last = time.monotonic()
        try:
            self._fork_blank()
            while True:
                self._reap()
                if not self.children and time.monotonic() - last > self.idle:
                    return
                self.listener.settimeout(0.05 if self.pending else 1.0)  # their ends, soon
                try:
                    conn, _ = self.listener.accept()
                except TimeoutError:
                    if not self._reachable():
                        return  # its socket was removed: no client can reach it any more
                    continue
                last = time.monotonic()
                with conn:
                    if self._handle(conn) == "exit":
                        return
                # the next command's, while this one runs: forked once the client's streams
                # and connection are closed here, or the blank would hold them open
                self._fork_blank()
        finally:
            self.close()

    def _reachable(self) -> bool:
        try:
            return (self.where / SOCKET_NAME).stat().st_ino == self.inode
        except OSError:
            return False

    def close(self) -> None:
        path = self.where / SOCKET_NAME
        with contextlib.suppress(OSError):
            if path.stat().st_ino == self.inode:  # not a newer server's
                path.unlink()
        self.listener.close()
        for spare in list(self.spares.values()):
            self._drop(spare, wait=0)  # each reads the end and ends its standby
        if self.blank is not None:
            self._drop(self.blank, wait=0)
            self.blank = None

    def _forget(self) -> None:
        """In a fork: the server's own sockets and lock are not the child's."""
        self.listener.close()
        if self.lock >= 0:
            os.close(self.lock)
        for spare in [*self.spares.values(), *([self.blank] if self.blank else [])]:
            spare.sock.close()

    def _reap(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self.children.discard(pid)
            asked = self.pending.pop(pid, None)
            if asked is not None:
                self._spare(asked)
        for spare in list(self.spares.values()):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(spare.pid, os.WNOHANG)
                if not done:
                    continue
            self.spares.pop(spare.key, None)
            spare.sock.close()
        if self.blank is not None:
            with contextlib.suppress(ChildProcessError):
                if not os.waitpid(self.blank.pid, os.WNOHANG)[0]:
                    return
            self.blank.sock.close()
            self.blank = None

    def _drop(self, spare: Spare, wait: float) -> None:
        """End a spare (it reads the end of its socket) and wait up to `wait` s for it."""
        self.spares.pop(spare.key, None)
        spare.sock.close()
        deadline = time.monotonic() + wait
        while True:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(spare.pid, os.WNOHANG)[0]:
                    return
            if time.monotonic() > deadline:
                self.children.add(spare.pid)  # reaped later, never left a zombie
                return
            time.sleep(0.02)

    def _drop_envs(self, envs: Any) -> None:
        """End the spares of these envs (None: all), and wait for them: before the env goes."""
        for spare in list(self.spares.values()):
            if envs is None or spare.env in envs:
                self._drop(spare, wait=10)

    def _spare_after(self, pid: int, message: dict[str, Any]) -> None:
        """A spare for the command `pid` ran, once it has ended: a standby warming beside a
        job slows it (2 cores: the job's own end, a test's, a benchmark's)."""
        if pid in self.children:
            self.pending[pid] = message
        else:
            self._spare(message)

    def _spare(self, message: dict[str, Any]) -> None:
        """Fork a spare for the next request like `message`'s command (one per key)."""
        key = served.request_key(message)
        old = self.spares.get(key)
        if old is not None:
            self._drop(old, wait=0)
        while len(self.spares) >= MAX_SPARES:
            self._drop(min(self.spares.values(), key=lambda s: s.born), wait=0)
        pid, ours = self._fork(lambda sock, where: _spare(sock, message, where))
        env = Path(str(message["job"].get("env_dir", ""))).name
        self.spares[key] = Spare(pid, ours, key, env)

    def _fork_blank(self) -> None:
        """Fork the blank for the next command, if there is none."""
        if self.blank is None:
            pid, ours = self._fork(_blank)
            self.blank = Spare(pid, ours, key="", env="")

    def _fork(self, then: Callable[[socket.socket, str], None]) -> tuple[int, socket.socket]:
        """Fork a process that waits to be handed a command (`then`: a spare's, the blank's
        wait), and the server's end of its socket."""
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (it ends in os._exit, whatever happens)
            try:
                self._forget()
                ours.close()
                then(theirs, str(self.where / SOCKET_NAME))
            finally:
                os._exit(1)
        theirs.close()
        return pid, ours

    def _hand(self, message: dict[str, Any], conn: socket.socket, fds: list[int]) -> bool:
        """Hand the request to the spare made for it, if there is one and it takes it."""
        spare = self.spares.pop(served.request_key(message), None)
        if spare is None:
            spare, self.blank = self.blank, None
        if spare is None:
            return False
        try:
            send(spare.sock, {"take": message}, [conn.fileno(), *fds])
            spare.sock.settimeout(TAKE_WAIT)
            while True:
                said, _ = receive(spare.sock)
                if said is None:
                    raise OSError("the spare ended")
                if said.get("taken") is True:
                    break
            send(spare.sock, {"go": True})  # now, and only now, it is the command
        except (OSError, ValueError):
            with contextlib.suppress(ProcessLookupError):  # stuck: it holds the client's
                os.kill(spare.pid, signal.SIGKILL)  # streams (sent to it) until it ends
            self._drop(spare, wait=0)
            return False
        spare.sock.close()
        self.children.add(spare.pid)  # it is the command now
        return True

    def _handle(self, conn: socket.socket) -> str | None:
        pid, uid, _gid = _PEER.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEER.size)
        )
        if uid != os.getuid():
            with contextlib.suppress(OSError):
                send(conn, {"error": f"this runner serves uid {os.getuid()} only, not {uid}"})
            return None
        conn.settimeout(5)  # a client that says nothing does not hold the others up
        fds: list[int] = []
        try:
            message, fds = receive(conn, fds=3)
            if message is None:
                return None
            what = self._check(message, fds)
            if what in ("stop", "retire"):
                send(conn, {"stopped" if what == "stop" else "retired": True})
                return "exit"
            if what == "ping":
                send(conn, self.status())
                return None
            if what == "spare":
                self._spare_after(pid, message)
                return None
            if what == "drop":
                self._drop_envs(message.get("envs"))
                send(conn, {"dropped": True})
                return None
            send(conn, {"started": True})
            self.served += 1
            if self._hand(message, conn, fds):
                return None
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the child ends in os._exit, whatever happens)
                try:
                    self._forget()
                    _child(conn, message, fds, str(self.where / SOCKET_NAME))
                finally:
                    os._exit(1)
            self.children.add(pid)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            with contextlib.suppress(OSError):
                send(conn, {"error": f"a request the runner cannot read: {exc}"})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return None

    def _check(self, message: dict[str, Any], fds: list[int]) -> str:
        """What the request asks: a command (checked whole), or ping, stop, retire."""
        for word in ("ping", "stop"):
            if message.get(word) is True:
                return word
        if message.get("drop") is True:
            envs = message.get("envs")
            if envs is not None and not (
                isinstance(envs, list) and all(isinstance(e, str) for e in envs)
            ):
                raise ValueError("envs is not a list of names")
            return "drop"
        if not isinstance(message.get("code"), str):
            raise ValueError("no code key")
        if message["code"] != self.key:
            return "retire"
        argv, env = message.get("argv"), message.get("env")
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv is not a list of strings")
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise ValueError("env is not a map of strings")
        if not isinstance(message.get("cwd"), str) or not isinstance(message.get("umask"), int):
            raise ValueError("no cwd or umask")
        if message.get("spare") is True:
            job = message.get("job")
            if not (isinstance(job, dict) and isinstance(job.get("spec"), dict)):
                raise ValueError("a spare's job is not a job")
            return "spare"
        if len(fds) != 3:
            raise ValueError(f"{len(fds)} file descriptors, not stdin, stdout and stderr")
        return "command"

    def status(self) -> dict[str, Any]:
        rss = 0
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return {
            "pid": os.getpid(),
            "code": self.key,
            "served": self.served,
            "commands_running": len(self.children),
            "since": self.started,
            "idle_exit": self.idle,
            "rss_bytes": rss,
            "fds": sum(1 for _ in Path("/proc/self/fd").iterdir()),
            "socket": str(self.where / SOCKET_NAME),
            "standbys": [self._listed(spare) for spare in self.spares.values()],
        }

    def _listed(self, spare: Spare) -> dict[str, Any]:
        spare.heard()
        return {
            "pid": spare.pid,
            "env": spare.env,
            "age": round(time.monotonic() - spare.born, 1),
            "ready": spare.standby is not None,
            "preloaded": (spare.standby or {}).get("preloaded", []),
            "ranks": (spare.standby or {}).get("ranks", 1),
            "rss": (spare.standby or {}).get("rss", 0),
        }


def _stream(fd: int, env: dict[str, str]) -> TextIO:
    """A text stream over the client's `fd`, as Python would have made it in the client."""
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
    if fd == 0:
        return io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding or "utf-8")
    return io.TextIOWrapper(
        io.BufferedWriter(raw),
        encoding=encoding or "utf-8",
        errors=errors or ("backslashreplace" if fd == 2 else "strict"),
        line_buffering=fd == 2 or os.isatty(fd),
        write_through=bool(env.get("PYTHONUNBUFFERED")),
    )


_ending = threading.Event()
"""Set in a command's child once the command ended: signals no longer reach it."""


def _hang_up_with(conn: socket.socket) -> None:
    """When the client goes (killed, its terminal closed), the command gets SIGHUP, as it
    would from a terminal that closed: `runner train` cancels its job, others end."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while conn.recv(4096):  # the client sends nothing more: only its end comes
                pass
        if not _ending.is_set():  # not the client leaving after the command's end
            os.kill(os.getpid(), signal.SIGHUP)

    threading.Thread(target=watch, name="client-watch", daemon=True).start()


def _limit(rlimits: object) -> None:
    """Take the client's limits (`ulimit`); one above what this process may raise to stays
    as it is here (its hard limit)."""
    if not isinstance(rlimits, dict):
        return
    for name, value in rlimits.items():
        which = getattr(resource, str(name), None)
        if not (str(name).startswith("RLIMIT_") and isinstance(which, int)):
            continue
        with contextlib.suppress(ValueError, OSError, TypeError):
            soft, hard = (int(v) for v in value)
            _, here = resource.getrlimit(which)
            if here != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > here):
                hard = here
                soft = here if soft == resource.RLIM_INFINITY else min(soft, here)
            resource.setrlimit(which, (soft, hard))


def _take_environment(env: dict[str, str]) -> None:
    """Make this process's variables `env`, changing only those that differ (a command's
    are mostly the server's: clearing them all and setting them again costs ~1 ms)."""
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _take_on(message: dict[str, Any], fds: list[int]) -> None:
    """Take the client's stdin, stdout and stderr, variables, umask and limits."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    env: dict[str, str] = message["env"]
    _take_environment(env)
    os.umask(message["umask"])
    _limit(message.get("rlimits"))
    sys.stdin, sys.stdout, sys.stderr = _stream(0, env), _stream(1, env), _stream(2, env)


def _child(
    conn: socket.socket,
    message: dict[str, Any],
    fds: list[int],
    where: str,
    pool: Any = None,
) -> None:
    """Become the client's command: its fds, cwd, umask and variables; then its exit code.
    In a spare, `pool` holds the standby its job may take."""
    code: int = 1
    served.here = served.Context(where, message, pool)
    try:
        conn.settimeout(None)  # the server's 5 s were for reading the request
        with contextlib.suppress(PermissionError):  # a spare leads its own session already
            os.setsid()  # a signal to the server's group is not one to the command
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _take_on(message, fds)
        send(conn, {"pid": os.getpid()})
        _hang_up_with(conn)
        try:
            os.chdir(message["cwd"])
        except OSError as exc:
            print(f"error: cannot enter {message['cwd']}: {exc.strerror}", file=sys.stderr)
            raise SystemExit(1) from None
        sys.argv = ["runner", *message["argv"]]
        from runner.cli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:  # nothing may stop the child here: a late signal, a closed stream
            _ending.set()
            for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
            if pool is not None:
                pool.close()  # a standby its job did not take
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            send(conn, {"exit": code})
        except BaseException:  # the client then says that its command went away
            pass
        os._exit(code)


def _blank(sock: socket.socket, where: str) -> None:
    """Be the blank: wait for the server to hand over a command (any), and become it; exit
    when the server closes its end."""
    os.setsid()  # the server's group's signals are not its own
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(Exception):
        _become(sock, where, None)
    os._exit(0)


def _become(sock: socket.socket, where: str, pool: Any) -> None:
    """Become the command the server hands over on `sock` (`take`, then `go`), with `pool`'s
    standby; return if the server closes its end or gives up."""
    asked, fds = receive(sock, fds=4)
    take = asked.get("take") if asked is not None else None
    if not isinstance(take, dict) or len(fds) != 4:
        return
    send(sock, {"taken": True})
    # A server that gave up waiting (TAKE_WAIT) serves the command itself and closes this
    # socket: the blank or spare serves only on its word, never both.
    go, _ = receive(sock)
    if go is None or go.get("go") is not True:
        return
    sock.close()
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    conn = socket.socket(fileno=fds[0])
    _child(conn, take, fds[1:], where, pool)  # never returns


def _spare(sock: socket.socket, message: dict[str, Any], where: str) -> None:
    """Be a spare: start one standby for the next command like `message`'s, say when it is
    ready, and become that command when the server hands it over. Exit (the standby
    with it) when the server closes its end, or when the standby is gone."""
    from runner.settings import RunnerSettings
    from runner.spec import JobSpec
    from runner.store import JobStore
    from runner.warm.pool import Pool, Request

    os.setsid()  # the server's group's signals are not its own
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    env: dict[str, str] = message["env"]
    _take_environment(env)
    os.umask(message["umask"])
    _limit(message.get("rlimits"))  # its standby starts with what the command's job would
    pool: Pool | None = None
    try:
        os.chdir(message["cwd"])
        settings = RunnerSettings()
        pool = Pool(JobStore(settings.state_dir), settings)
        job = message["job"]
        pool.replenish(
            Request(
                JobSpec.model_validate(job["spec"]),
                Path(job["env_dir"]),
                job["base_python"],
                tuple(str(m) for m in job.get("preload") or ()),
            )
        )
        said = False
        while not pool.empty():
            if select.select([sock], [], [], 1.0)[0]:
                _become(sock, where, pool)
                return
            if not said and (listed := pool.listing()) and listed[0]["ready"]:
                send(sock, {"ready": listed[0]})
                said = True
    except Exception:  # a spare that cannot be is only a cold start later
        pass
    finally:
        if pool is not None:
            pool.close()
        os._exit(0)


def serve(where: Path) -> None:
    """Serve `where` until idle, stopped or retired; a second server of it exits at once."""
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = os.open(where / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + 3  # a retired server may still be on its way out
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                return  # another serves it
            time.sleep(0.02)
    _preload()
    _compile_client()
    idle = 900.0
    with contextlib.suppress(Exception):
        from runner.settings import RunnerSettings

        idle = RunnerSettings().server_idle
    Server(where, idle, lock).run()


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
