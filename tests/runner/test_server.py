"""The resident runner and its thin client (`runner.client`, `runner.server`): the `runner`
command itself, as a user types it, served and in-process, side by side."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner import client
from runner.client import SOCKET_NAME
from tests.runner.conftest import JOBS, in_the_foreground
from tests.runner.test_process import wait_for

RUNNER = str(Path(sys.executable).parent / "runner")
Run = Callable[..., subprocess.CompletedProcess[str]]


def runner(environ: dict[str, str], cwd: Path) -> Run:
    def run(*args: str, served: bool = True, **overrides: str) -> subprocess.CompletedProcess[str]:
        env = {**environ, **overrides, **({} if served else {"RUNNER_SERVER": "0"})}
        return subprocess.run(  # a stream held open by another process: a failure, not a hang
            [RUNNER, *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run


def server_status(environ: dict[str, str]) -> dict[str, Any]:
    """`runner server status --json`, asked in-process (so no server is started by it)."""
    said = subprocess.run(
        [RUNNER, "server", "status", "--json"],
        env={**environ, "RUNNER_SERVER": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(said.stdout)
    return found


def server_pid(environ: dict[str, str]) -> int | None:
    found = server_status(environ)
    return int(found["pid"]) if found["running"] else None


def socket_of(environ: dict[str, str]) -> Path:
    return Path(environ["RUNNER_STATE_DIR"]) / "server" / SOCKET_NAME


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _same(text: str) -> str:
    """Output with what differs between two runs of a command (names, times) blanked."""
    text = re.sub(r"\b[a-z][0-9a-f]{11}\b", "NAME", text)
    return re.sub(r"\b\d+(\.\d+)?(ms|s)\b", "T", text)


def test_repeated_commands_answer_as_in_process_and_much_sooner(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    script = tmp_path / "hello.py"
    script.write_text("import tiny_pkg\nprint('hello', tiny_pkg.__version__)\n")
    first = run("train", "--name", "one", "--with", "tiny-pkg", str(script))
    assert first.returncode == 0, first.stderr
    assert server_pid(environ) is not None  # the first command started it, no setup step
    for args in (
        ("status", "one"),
        ("jobs",),
        ("jobs", "--json"),
        ("logs", "one"),
        ("envs", "list"),
        ("--help",),
        ("train", "--help"),
        ("status", "no-such-job"),
        ("train", "--no-such-option"),
    ):
        served, alone = run(*args), run(*args, served=False)
        assert (served.returncode, served.stdout, served.stderr) == (
            alone.returncode,
            alone.stdout,
            alone.stderr,
        ), args
    served = run("train", "--with", "tiny-pkg", str(script))
    alone = run("train", "--with", "tiny-pkg", str(script), served=False)
    assert served.returncode == alone.returncode == 0
    assert (_same(served.stdout), _same(served.stderr)) == (
        _same(alone.stdout),
        _same(alone.stderr),
    )
    failed = run("train", "--env", "EXIT_CODE=7", str(JOBS / "report.py"), "X")
    assert failed.returncode == 7 and "Failed" in failed.stderr  # the job's code, through it


def test_each_command_gets_the_clients_variables_cwd_and_pip_configuration(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    assert run("jobs").returncode == 0
    pid = server_pid(environ)
    shown = run("config", "--json", RUNNER_CANCEL_GRACE="7")
    assert json.loads(shown.stdout)["settings"]["cancel_grace"]["value"] == 7.0
    shown = run("config", "--json", RUNNER_CANCEL_GRACE="3")
    assert json.loads(shown.stdout)["settings"]["cancel_grace"]["value"] == 3.0
    pip_conf = tmp_path / "pip.conf"
    for url in ("https://one.invalid/simple", "https://two.invalid/simple"):
        pip_conf.write_text(f"[global]\nextra-index-url = {url}\n")
        said = run("config", PIP_CONFIG_FILE=str(pip_conf)).stdout
        assert url in said, said  # pip's file read again, per command
    assert (
        "https://three.invalid" in run("config", PIP_EXTRA_INDEX_URL="https://three.invalid").stdout
    )
    assert '"event": "env.build"' in run("envs", "create", RUNNER_LOG_FORMAT="json").stderr
    assert run("envs", "create").stderr.startswith("Using env ")  # text again, the next time
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "where.py").write_text(f"print('this is {folder}')\n")
        said = subprocess.run(
            [RUNNER, "train", "where.py"],
            env=environ,
            cwd=tmp_path / folder,
            capture_output=True,
            text=True,
            check=True,
        )
        assert said.stdout == f"this is {folder}\n"  # where.py of the client's cwd
    assert server_pid(environ) == pid  # one server served them all


def test_it_retires_when_idle_or_when_the_code_changed(
    environ: dict[str, str], tmp_path: Path
) -> None:
    """ "Other code" is a copy of the runner's, changed: the tree the other tests run from
    stays as it is (a changed file there would retire their servers mid-command)."""
    code = _copy_of_the_code(tmp_path)
    environ = {**environ, "PYTHONPATH": str(code)}
    run = runner(environ, tmp_path)
    run("jobs", RUNNER_SERVER_IDLE="2")
    pid = server_pid(environ)
    assert pid is not None
    wait_for(lambda: not alive(pid), timeout=30)  # idle: it went, and its socket with it
    assert not socket_of(environ).exists()
    run("jobs")
    old = server_pid(environ)
    module = code / "runner" / "units.py"
    stamp = module.stat()
    os.utime(module, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # other code
    assert run("jobs").returncode == 0
    new = server_pid(environ)
    assert new is not None and new != old and old is not None and not alive(old)
    stopped = run("server", "stop")
    assert stopped.stdout.strip() == "stopped the resident runner"
    assert server_pid(environ) is None


def _copy_of_the_code(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    root = Path(__file__).parents[2]
    for package in ("runner", "envs"):
        shutil.copytree(
            root / package, code / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return code


def test_a_command_starts_with_no_module_that_loads_re_and_compiles_nothing(
    environ: dict[str, str], tmp_path: Path
) -> None:
    """The thin client's start: Python's modules that load `re` or `enum` (json, socket,
    signal, ...) cost more than the rest of a served command; and its bytecode is written by
    the server even where Python writes none (`PYTHONDONTWRITEBYTECODE`, set in many
    images), so no command compiles it. A copy of the code: its bytecode starts absent."""
    code = _copy_of_the_code(tmp_path)
    environ = {**environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    assert runner(environ, tmp_path)("jobs").returncode == 0  # the server starts
    for module in ("__init__", "client"):
        compiled = importlib.util.cache_from_source(str(code / "runner" / f"{module}.py"))
        assert Path(compiled).is_file(), module
    said = subprocess.run(
        [sys.executable, "-X", "importtime", RUNNER, "jobs"],  # `python`, not `python3`: same
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert said.returncode == 0, said.stderr
    loaded = {
        line.rsplit("|", 1)[1].strip()
        for line in said.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "runner.client" in loaded
    slow = {"re", "enum", "json", "socket", "signal", "struct", "contextlib", "hashlib"}
    assert not loaded & {*slow, "subprocess"}, loaded  # nor a new server (same interpreter)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_the_clients_json_is_jsons(value: object) -> None:
    assert client.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert client.loads(json.dumps(value)) == value
    assert client.loads(json.dumps(value, indent=2)) == value


def test_the_clients_json_refuses_what_json_refuses() -> None:
    for text in ("", "{", '{"a": 1} x', "[1,]", "{'a': 1}", "nul", '"\\x"', "01"):
        with pytest.raises(ValueError):
            json.loads(text)
        with pytest.raises(ValueError):
            client.loads(text)
    with pytest.raises(TypeError):
        client.dumps({"a": object()})


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return {child for child in found if alive(child)}


def test_a_command_runs_in_the_fork_made_ahead_for_it_or_in_a_new_one(
    environ: dict[str, str], tmp_path: Path
) -> None:
    """The server forks the next command's process before it comes (its blank): a command
    does not wait for that fork. A blank that is gone is only a fork later."""
    run = runner(environ, tmp_path)
    listed = run("jobs")
    pid = server_pid(environ)
    assert pid is not None
    wait_for(lambda: len(_children(pid)) == 1, timeout=30)  # the blank, waiting
    (blank,) = _children(pid)
    assert run("jobs").stdout == listed.stdout
    wait_for(lambda: blank not in _children(pid) and len(_children(pid)) == 1, timeout=30)
    (blank,) = _children(pid)  # it became that command and ended; a new one waits
    os.kill(blank, signal.SIGKILL)
    again = run("jobs")
    assert (again.returncode, again.stdout, again.stderr) == (0, listed.stdout, listed.stderr)
    wait_for(lambda: blank not in _children(pid) and len(_children(pid)) == 1, timeout=30)
    assert server_pid(environ) == pid


def test_without_a_server_every_command_runs_in_process_the_same(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    alone = run("jobs", served=False)
    assert alone.returncode == 0 and not socket_of(environ).parent.exists()  # none started
    (Path(environ["RUNNER_STATE_DIR"])).mkdir(parents=True, exist_ok=True)
    socket_of(environ).parent.write_text("a file where its folder would be")
    blocked = run("jobs")
    assert (blocked.returncode, blocked.stdout, blocked.stderr) == (0, alone.stdout, alone.stderr)


def test_its_folder_is_the_users_alone_and_a_job_cannot_reach_it(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    run("jobs")
    where = socket_of(environ)
    assert where.parent.stat().st_mode & 0o777 == 0o700 and where.stat().st_mode & 0o777 == 0o600
    intruder = tmp_path / "reach.py"
    intruder.write_text(
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
        "else:\n"
        "    print('REACHED')\n"
    )
    said = run("train", "--network", str(intruder), str(where))
    assert "refused" in said.stdout and "REACHED" not in said.stdout, said.stdout + said.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="another uid is needed: root plays it")
def test_it_serves_its_own_uid_only(environ: dict[str, str], tmp_path: Path) -> None:
    state = Path(tempfile.mkdtemp(prefix="uid-", dir="/tmp"))  # a path another uid can walk
    state.chmod(0o755)
    run = runner({**environ, "RUNNER_STATE_DIR": str(state)}, tmp_path)
    environ = {**environ, "RUNNER_STATE_DIR": str(state)}
    run("jobs")
    where = socket_of(environ)
    where.parent.chmod(0o755)  # as if its folder let others through: the socket refuses
    where.chmod(0o666)
    try:
        probe = (
            "import socket, struct, json, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "body = json.dumps({'ping': True}).encode()\n"
            "try:\n"
            "    s.sendall(struct.pack('!I', len(body)) + body)\n"
            "except BrokenPipeError:\n"  # it may refuse, and close, before reading a byte
            "    pass\n"
            "head = s.recv(4); print(s.recv(struct.unpack('!I', head)[0]).decode())\n"
        )
        other = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-I",
                "-c",
                probe,
                str(where),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "serves uid 0 only, not 65534" in other.stdout, other.stdout + other.stderr
        assert server_pid(environ) is not None  # and it goes on
    finally:
        where.parent.chmod(0o700)
        run("server", "stop")
        shutil.rmtree(state, ignore_errors=True)


def _raw(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return sock.recv(65536)


def test_a_request_it_cannot_read_gets_one_error_and_it_goes_on(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    run("jobs")
    pid, path = server_pid(environ), socket_of(environ)
    for payload in (
        b"\x00\x00\x00\x05hello",
        struct.pack("!I", 2**31) + b"{}",
        struct.pack("!I", 2) + b"[]",
        struct.pack("!I", 2) + b"{}",
        b"",
    ):
        answer = _raw(path, payload)
        assert answer == b"" or b"a request the runner cannot read" in answer, answer
    assert server_pid(environ) == pid
    assert run("jobs").returncode == 0


def started(environ: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`runner ARGS...` started, as a user's command in the foreground; its output piped."""
    return subprocess.Popen(
        in_the_foreground(RUNNER, *args),
        env=environ,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_killing_the_server_mid_job_ends_neither_the_job_nor_the_command(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    counter = tmp_path / "count.py"
    counter.write_text(
        "import time\nfor i in range(20):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    )
    owner = started(environ, tmp_path, "train", "--name", "through", str(counter))
    wait_for(lambda: server_pid(environ) is not None, timeout=30)
    pid = server_pid(environ)
    assert pid is not None
    wait_for(lambda: "tick 1" in run("logs", "through", served=False).stdout, timeout=60)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), timeout=10)
    assert run("jobs").returncode == 0  # while the command runs: it holds no server's lock
    assert server_pid(environ) not in (None, pid)
    out, err = owner.communicate(timeout=60)
    assert owner.returncode == 0, err
    assert "tick 19" in out and "job through Complete" in err
    assert json.loads(run("status", "through", "--json").stdout)["status"] == "Complete"
    assert server_pid(environ) not in (None, pid)  # that command started a fresh one


def test_a_command_killed_under_its_client_is_said_in_one_line(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    owner = started(environ, tmp_path, "train", "--name", "cut", str(JOBS / "sleeper.py"))
    wait_for(lambda: "ready" in run("logs", "cut", served=False).stdout, timeout=60)
    command = json.loads(run("status", "cut", "--json").stdout)["owner"]["pid"]
    os.kill(command, signal.SIGKILL)  # the runner that owns the job, forked by the server
    _, err = owner.communicate(timeout=60)
    assert owner.returncode == 1
    assert (
        err.strip().splitlines()[-1].startswith("error: the runner serving this command went away")
    )
    reaped = run("jobs", "--reap", "--json")
    assert [j["status"] for j in json.loads(reaped.stdout) if j["name"] == "cut"] == ["Failed"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_reach_the_served_command(
    environ: dict[str, str], tmp_path: Path, signum: int
) -> None:
    run = runner(environ, tmp_path)
    owner = started(environ, tmp_path, "train", "--name", "stopped", str(JOBS / "sleeper.py"))
    wait_for(lambda: "ready" in run("logs", "stopped", served=False).stdout, timeout=60)
    owner.send_signal(signum)
    _, err = owner.communicate(timeout=60)
    assert owner.returncode == 130, err
    assert json.loads(run("status", "stopped", "--json").stdout)["reason"] == "cancelled"


def test_many_requests_and_two_clients_at_once_leak_nothing(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    run("jobs")

    def server() -> dict[str, int]:
        said = json.loads(run("server", "status", "--json").stdout)
        return {"fds": said["fds"], "rss": said["rss_bytes"]}

    before = server()
    errors: list[str] = []

    def loop() -> None:
        for _ in range(60):
            done = run("status", "no-such")
            if done.returncode != 1 or "no job named" not in done.stderr:
                errors.append(done.stderr)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = server()
    assert errors == []
    assert after["fds"] == before["fds"]  # each command's fds went with it
    assert after["rss"] - before["rss"] < 8 * 2**20, (before, after)


@pytest.mark.parametrize("state_home", [None, "/srv/state", "  "])
def test_the_clients_folder_is_the_one_settings_name(
    monkeypatch: pytest.MonkeyPatch, state_home: str | None
) -> None:
    """The client finds the state folder without importing platformdirs: the same rule."""
    import platformdirs

    from runner.client import folder
    from runner.settings import RunnerSettings

    for name in ("RUNNER_STATE_DIR", "XDG_RUNTIME_DIR", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    if state_home is not None:
        monkeypatch.setenv("XDG_STATE_HOME", state_home)
    assert folder() == str(RunnerSettings().state_dir / "server")
    assert folder() == str(Path(platformdirs.user_state_dir("sandbox-runner")) / "server")


def test_a_client_killed_mid_job_cancels_it_as_a_closed_terminal_does(
    environ: dict[str, str], tmp_path: Path
) -> None:
    run = runner(environ, tmp_path)
    owner = started(environ, tmp_path, "train", "--name", "orphan", str(JOBS / "sleeper.py"))
    wait_for(lambda: "ready" in run("logs", "orphan", served=False).stdout, timeout=60)
    owner.kill()  # kill -9 of `runner train` itself: no signal is forwarded
    owner.communicate()
    wait_for(lambda: run("status", "orphan", "--json").stdout.count('"Failed"') > 0, timeout=60)
    record = json.loads(run("status", "orphan", "--json").stdout)
    assert (record["status"], record["reason"]) == ("Failed", "cancelled")
