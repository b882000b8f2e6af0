"""Standbys for `runner train`, which is a new process each time: the resident runner
(`runner.server`) keeps them, each in a *spare*.

A spare is a fork of the resident runner, asked for by a `runner train` command once
its job is up and made once that command has ended (a standby warming beside a job
slows it): it holds a pool (`pool.Pool`) with one standby for the next job like that
one, and waits. The next `runner train` request with the same argv, cwd, umask, limits and variables
(`request_key`) is handed to that spare instead of a fresh fork: it becomes the
command, and the command's job takes the standby, as a job of the SDK backend takes
its pool's. A request that differs gets a fresh fork, and its job starts cold.

The hand-over is a three-step exchange on the spare's socket: the server sends the
request with the client's connection and streams ("take"), the spare answers "taken",
the server answers "go". A spare silent for `server.TAKE_WAIT` seconds is dropped and a
fresh fork serves the command; since the spare serves only on "go", which then never
comes, a command is never served twice.

Why a process per standby and not the server itself: a standby's job is supervised by
the process that waits for it and reads its output, which must be the standby's parent
(and a sandbox dies with the thread that started it); and a command keeps running when
the server is killed. A spare exits when its standby is gone (idle, memory, died), when
the server closes its end (stopped, retired, killed: it reads an end of file), or when
`envs rm`/`envs gc` asks for its env.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envs.log import get_logger

if TYPE_CHECKING:
    from runner.settings import RunnerSettings
    from runner.spec import JobSpec
    from runner.warm.pool import Pool, Request
    from runner.warm.standby import Standby

_log = get_logger("runner.warm")


REQUEST = ("code", "argv", "cwd", "umask", "env", "rlimits")
"""What a spare is made from, and the request it may serve."""


def request_key(message: dict[str, Any]) -> str:
    """Which spare may serve a client's request: the same command, in the same folder, with
    the same umask and variables as the one the spare was made after."""
    what = [message.get(k) for k in REQUEST if k != "code"]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


@dataclass
class Context:
    """A command the resident runner serves: where its server listens, the request, and
    the pool of the spare it runs in (None: a fresh fork, with no standby)."""

    socket: str
    request: dict[str, Any]
    pool: Pool | None = None


here: Context | None = None
"""Set by the resident runner in the process of each command it serves."""


class Served:
    """The warm side of a served `runner train`: the standby of the spare it runs in, and
    the next spare, asked of the server once its job is up (made once it has ended)."""

    def __init__(self, context: Context, preload: tuple[str, ...] = ()) -> None:
        self.context = context
        self.preload = preload

    def take(self, spec: JobSpec) -> Standby | None:
        pool = self.context.pool
        return pool.take(spec) if pool is not None else None

    def claim(self, name: str) -> Standby | str | None:
        pool = self.context.pool
        return pool.claim(name) if pool is not None else None

    def release(self, standby: Standby) -> None:
        if self.context.pool is not None:
            self.context.pool.release(standby)

    def replenish(self, request: Request) -> None:
        """Ask the server for a spare for the next command like this one (never fails the job)."""
        from runner.client import send

        message = {
            "spare": True,
            **{k: self.context.request.get(k) for k in REQUEST},
            "job": {
                "spec": request.spec.model_dump(mode="json"),
                "env_dir": str(request.env_dir),
                "base_python": request.base_python,
                "preload": [*request.preload, *self.preload],
            },
        }
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(self.context.socket)
                send(sock, message)
        except OSError as exc:
            _log.debug("standby.unasked", error=str(exc))


def warm(settings: RunnerSettings, preload: tuple[str, ...] = ()) -> Served | None:
    """This command's warm side, if the resident runner serves it and warm starts are on;
    the standby it leaves imports `preload` too."""
    return Served(here, preload) if here is not None and settings.warm else None


def drop(env_names: list[str] | None) -> None:
    """Ask the resident runner, if one runs, to end the spares of these envs (None: all) and
    wait for them: an env's standbys go before the env does, never after."""
    from runner.client import receive, send, socket_path

    path = here.socket if here is not None else socket_path()
    with contextlib.suppress(OSError, ValueError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(15)
        sock.connect(path)
        send(sock, {"drop": True, "envs": env_names})
        receive(sock)
