"""The `runner` command: a thin client of a per-user resident runner (standard library only).

Importing pydantic-settings, structlog and click takes ~200 ms before any work, more
than most commands need in all. So `runner` sends each command to a resident runner
(`runner.server`) that holds them imported: its argv, cwd, umask, whole environment
and its own stdin, stdout and stderr (passed over the socket, SCM_RIGHTS). The server
forks a child that becomes the command, as if it had been started here: it writes
straight to this terminal or pipe, reads the client's settings from the client's
variables, and sends back its exit code. Signals (Ctrl-C, SIGTERM, SIGHUP) are
forwarded to it, so a foreground `runner train` is cancelled as it is in-process.

The first command starts the server; it exits after `RUNNER_SERVER_IDLE` seconds
without a request, and a client of other code retires it. Where no server can be
had (`RUNNER_SERVER=0`, no folder of the user's own for its socket, a path too
long), the command runs in this process, with the same output.
"""

from __future__ import annotations

# Only modules built into the interpreter: `socket`, `signal`, `json`, `struct` and
# `contextlib` are Python wrappers that import `enum` and `re`, which cost more (~25 ms
# measured here) than all the rest of a served command. The server uses the same send and
# receive.
import _signal  # type: ignore[import-not-found]  # signal's C part
import _socket
import os
import sys
import time

try:
    from _json import encode_basestring_ascii as _quoted
    from _json import make_scanner as _make_scanner
except ImportError:  # an interpreter without json's C parts
    from json.encoder import encode_basestring_ascii as _quoted
    from json.scanner import make_scanner as _make_scanner

APP = "sandbox-runner"
HEADER_SIZE = 4  # a message's length, big-endian, before it
MAX_MESSAGE = 8 * 2**20
SOCKET_NAME = "server.sock"
_OFF = {"0", "false", "no", "off"}
_FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)


def folder() -> str:
    """The server's folder, the user's alone (0700): in the runtime folder the login gave
    (`XDG_RUNTIME_DIR`), else in the runner's state folder."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, APP)
    state = os.environ.get("RUNNER_STATE_DIR")
    if not state:  # platformdirs.user_state_dir(APP), whose import costs more than this
        home = os.environ.get("XDG_STATE_HOME", "").strip() or os.path.expanduser("~/.local/state")
        state = os.path.join(home, APP)
    return os.path.join(state, "server")


def socket_path(where: str | None = None) -> str:
    """The server's socket, in `where` (default: `folder()`)."""
    return os.path.join(where or folder(), SOCKET_NAME)


def code_key() -> str:
    """What the running code is: this interpreter and every module file of the runner's
    (size and time), so a server of other code is retired by the first client that sees it."""
    here = os.path.dirname(os.path.abspath(__file__))
    # the interpreter and its environment, however named (`python`, `python3`, a link)
    parts = [os.path.realpath(sys.executable), sys.prefix, sys.version]
    for package in (here, os.path.join(os.path.dirname(here), "envs")):
        for root, _dirs, files in os.walk(package):
            for name in files:
                if name.endswith(".py"):
                    info = os.stat(os.path.join(root, name))
                    parts.append(f"{root}/{name}:{info.st_size}:{info.st_mtime_ns}")
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]  # hashlib's, no OpenSSL
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]  # Python 3.11
        except ImportError:
            from hashlib import sha256

    return str(sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16])


def dumps(value: object) -> str:
    """`value` as JSON, as `json.dumps` writes it (ASCII, no spaces)."""
    if isinstance(value, str):
        return str(_quoted(value))
    if value is None or value is True or value is False:
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value) if value - value == 0 else _constants[str(value)]
    if isinstance(value, dict):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON")


_constants = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN"}


class _Decoding:
    """What json's scanner reads from its decoder: json.loads' defaults."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        self.parse_constant = {"Infinity": _INF, "-Infinity": -_INF, "NaN": _INF - _INF}.get
        self.memo: dict[str, str] = {}


_INF = float("inf")
_decoding = _Decoding()
_scan = _make_scanner(_decoding)  # type: ignore[arg-type]


def loads(text: str) -> object:
    """One JSON value, as `json.loads` reads it; ValueError for anything else."""
    start = len(text) - len(text.lstrip())
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"not JSON (at character {exc.value})") from None
    finally:
        _decoding.memo.clear()
    if text[end:].strip():
        raise ValueError(f"more than one JSON value (at character {end})")
    return value


def send(sock: _socket.socket, message: dict[str, object], fds: list[int] | None = None) -> None:
    data = dumps(message).encode()
    data = len(data).to_bytes(HEADER_SIZE, "big") + data
    if fds:
        packed = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])
        data = data[sent:]
    if data:
        sock.sendall(data)


def receive(sock: _socket.socket, fds: int = 0) -> tuple[dict[str, object] | None, list[int]]:
    """One message (None at the end of the stream), and the fds that came with it."""
    got: list[int] = []
    if fds:
        head, ancillary, _flags, _addr = sock.recvmsg(HEADER_SIZE, _socket.CMSG_LEN(fds * 4))
        for level, kind, data in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                whole = len(data) - len(data) % 4
                got += [
                    int.from_bytes(data[i : i + 4], sys.byteorder, signed=True)
                    for i in range(0, whole, 4)
                ]
    else:
        head = sock.recv(HEADER_SIZE, _socket.MSG_WAITALL)
    if len(head) < HEADER_SIZE:
        return None, got
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes")
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            return None, got
        data += piece
    message = loads(data.decode())
    if not isinstance(message, dict):
        raise ValueError("a message that is not an object")
    return message, got


def _connect(path: str) -> _socket.socket | None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def ours(where: str) -> bool:
    """Whether `where` is a folder of this user's that no one else can enter (made so if it
    is missing): a socket anywhere else may be anyone's, and gets neither the variables nor
    the terminal."""
    import stat

    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
        info = os.lstat(where)
        if info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode):
            return False  # another's, a symlink, a file
        if info.st_mode & 0o077:
            os.chmod(where, 0o700)
    except OSError:
        return False
    return True


def _start(where: str) -> bool:
    """Start a server for `where` (its own session, its output in its log); True once its
    socket answers."""
    try:
        log = os.open(
            os.path.join(where, "server.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
    except OSError:
        return False
    import subprocess

    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "runner.server", where],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sock = _connect(socket_path(where))
        if sock is not None:
            sock.close()
            return True
        if server.poll() is not None:  # it ended (another held its lock): try that one
            return _connect(socket_path(where)) is not None
        time.sleep(0.01)
    return False


def request(where: str, message: dict[str, object], fds: list[int]) -> _socket.socket | None:
    """A connection to the server of `where` that took `message` (started, or restarted when
    it runs other code); None where no server can be had."""
    for attempt in range(3):
        sock = _connect(socket_path(where))
        if sock is None:
            if attempt == 2 or not _start(where):
                return None
            continue
        try:
            send(sock, message, fds)
            answer, _ = receive(sock)
        except (OSError, ValueError):
            sock.close()
            continue
        if answer is not None and answer.get("started"):
            return sock
        sock.close()
        if answer is not None and answer.get("error"):
            print(f"error: {answer['error']}", file=sys.stderr)
            sys.exit(2)
        time.sleep(0.05)  # retired (other code) or gone: the next try starts one
    return None


def _served(argv: list[str]) -> int | None:
    """The command's exit code, run by the server; None: run it here instead."""
    where = folder()
    if len(socket_path(where)) >= 100 or not ours(where):  # sun_path: 108 bytes
        return None
    try:
        for fd in (0, 1, 2):  # each goes to the server: a closed one is not sent
            os.fstat(fd)
        cwd = os.getcwd()
    except OSError:  # a closed fd, a removed cwd: in-process, which says what it says
        return None
    message: dict[str, object] = {
        "argv": argv,
        "cwd": cwd,
        "env": dict(os.environ),
        "umask": _umask(),
        "rlimits": _rlimits(),
        "code": code_key(),
    }
    sock = request(where, message, [0, 1, 2])
    if sock is None:
        return None
    try:
        return _streamed(sock)
    finally:
        sock.close()


def _streamed(sock: _socket.socket) -> int | None:
    """The command's exit code, from the server's answers on `sock`."""
    try:
        answer, _ = receive(sock)
    except (OSError, ValueError):  # not a server's answer: run it here
        return None
    ended = answer.get("exit") if answer else None
    if isinstance(ended, int):
        return ended  # it ended before it began, and said why
    pid = answer.get("pid") if answer else None
    if not isinstance(pid, int):
        return None
    _forward_signals(pid)
    while True:
        try:
            answer, _ = receive(sock)
        except (OSError, ValueError):
            answer = None
        if answer is None:
            print(
                "error: the runner serving this command went away before it ended "
                "(killed?); `runner jobs` shows what its jobs became",
                file=sys.stderr,
            )
            return 1
        if "exit" in answer:
            code = answer["exit"]
            return code if isinstance(code, int) else 1


def _rlimits() -> dict[str, list[int]]:
    """This process's limits (`ulimit`), which the command gets as it would here."""
    import resource

    return {
        name: list(resource.getrlimit(getattr(resource, name)))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _forward_signals(pid: int) -> None:
    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib is one more module to load)
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in _FORWARDED:
        _signal.signal(signum, forward)


def in_process() -> None:
    from runner.cli import main as cli_main

    cli_main()


def main() -> None:
    argv = sys.argv[1:]
    if os.environ.get("RUNNER_SERVER", "1").strip().lower() in _OFF:
        in_process()
        return
    code = _served(argv)
    if code is None:
        in_process()
        return
    for stream in (sys.stdout, sys.stderr):  # what the client itself said (an error line)
        try:  # noqa: SIM105 (contextlib is one more module to load)
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)  # the command has ended; Python's own teardown is ~3 ms more (measured)
