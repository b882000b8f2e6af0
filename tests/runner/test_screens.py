"""Screens, as a person sees them: the runner under a real terminal (tmux), its screen
captured, and the same commands piped. What must be there (the summary lines, the job's
own lines, the progress line moving) and what must not (argv, 64-hex keys, timestamps,
JSON, escapes where no colour is wanted)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli.progress import PIPED_EVERY
from tests.condachannel import make_channel, serve, write_pixi_lock
from tests.runner.conftest import TORCH, cli_runner
from tests.runner.test_gpus import JOBS, fake_machine
from tests.runner.test_process import wait_for
from tests.wheelhouse import make_wheel

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

RUNNER = shlex.quote(str(Path(sys.executable).parent / "runner"))  # as a person types it
LONG_HEX = re.compile(r"[0-9a-f]{13,}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
ESCAPE = re.compile(r"\x1b\[")
HELLO = "import tiny_pkg\nprint('hello from tiny-pkg', tiny_pkg.__version__)\n"


class Terminal:
    """One tmux server of its own with one window of `width` columns running a command."""

    def __init__(self, environ: dict[str, str], cwd: Path, width: int = 100) -> None:
        self.socket = ""
        self.environ = {k: v for k, v in environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        self.environ.pop("TMUX", None)
        self.cwd = cwd
        self.width = width

    def _tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            env=self.environ,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def run(self, command: str, timeout: float = 300, every: float = 0.2) -> list[str]:
        """The screens seen while `command` ran, every `every` s, the last one after it ended
        (each the text a person sees: no escapes, history included)."""
        self.socket = f"screens-{uuid.uuid4().hex[:8]}"  # a server of its own, each time
        shell = f"{command}; echo __EXIT__ $?; sleep 600"
        self._tmux(
            *("new-session", "-d", "-x", str(self.width), "-y", "50"),
            *("bash", "--norc", "--noprofile", "-c", shell),
        )
        screens = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                screen = self.capture()
                screens.append(screen)
                if "__EXIT__" in screen:
                    return screens
                time.sleep(every)
            raise AssertionError(f"still running after {timeout} s:\n{screens[-1]}")
        finally:
            self.escapes = self.capture("-e")
            subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False)

    def capture(self, *flags: str) -> str:
        screen = self._tmux("capture-pane", "-p", "-J", "-S", "-", *flags)
        return "\n".join(line.rstrip() for line in screen.splitlines()).strip("\n")


def shown(screen: str) -> list[str]:
    """The lines of a finished screen before the shell's `__EXIT__` line."""
    lines = screen.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if line.startswith("__EXIT__"))]


def exit_of(screen: str) -> int:
    return int(re.findall(r"__EXIT__ (\d+)", screen)[-1])


def assert_for_people(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert not LONG_HEX.search(text), text  # keys as git shortens them
    assert not TIMESTAMP.search(text), text
    assert "bwrap" not in text and "argv" not in text and "[info" not in text, text
    assert not any(line.lstrip().startswith("{") for line in lines), text  # no JSON


def piped(environ: dict[str, str], cwd: Path, command: str) -> subprocess.CompletedProcess[str]:
    """`command` with its output piped (`| cat`), as in a CI log: stdout and stderr as one."""
    return subprocess.run(
        f"{command} 2>&1 | cat; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        env={k: v for k, v in environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_job_cold_and_warm_reads_like_uv_on_a_terminal_and_piped(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "hello.py"
    script.write_text(HELLO)
    term = Terminal(cli_environ, tmp_path)
    cold = term.run(f"{RUNNER} train --name cold --with tiny-pkg {script}")[-1]
    assert exit_of(cold) == 0, cold
    lines = shown(cold)
    assert_for_people(lines)
    assert re.fullmatch(r"Resolved 2 packages in \d+ms", lines[0]), cold
    env = re.fullmatch(r"Installed 2 packages in \S+ \(env ([0-9a-f]{12}), [\d.]+ KiB\)", lines[1])
    assert env, cold
    assert lines[2:] == [
        "Started job cold",
        "hello from tiny-pkg 1.0",
        lines[-1],
    ], cold
    assert re.fullmatch(r"job cold Complete in \S+; `runner logs cold`", lines[-1])
    assert ESCAPE.search(term.escapes)  # a terminal: its colours

    warm = shown(term.run(f"{RUNNER} train --name warm --with tiny-pkg {script}")[-1])
    assert warm[:2] == [f"Using env {env[1]}", "Started job warm"], warm

    out = piped(cli_environ, tmp_path, f"{RUNNER} train --name pipe --with tiny-pkg {script}")
    assert out.returncode == 0
    assert not ESCAPE.search(out.stdout), out.stdout  # piped: no colour, no spinner
    said = out.stdout.splitlines()
    assert_for_people(said)
    assert said[:3] == [f"Using env {env[1]}", "Started job pipe", "hello from tiny-pkg 1.0"]
    assert said[3].startswith("job pipe Complete in ")

    records = piped(  # JSON is one option away, and then only JSON on stdout
        cli_environ, tmp_path, f"{RUNNER} --log-format json train --name j --with tiny-pkg {script}"
    )
    *events, summary = records.stdout.splitlines()
    assert {json.loads(line)["event"] for line in events} >= {"env.hit", "job.start", "output"}
    assert summary.startswith("job j Complete in ")  # and the summary, for people, on stderr


def test_verbose_shows_every_event_with_its_time_and_fields(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "hello.py"
    script.write_text(HELLO)
    out = piped(cli_environ, tmp_path, f"{RUNNER} train -v --name v --with tiny-pkg {script}")
    assert out.returncode == 0, out.stdout
    assert TIMESTAMP.search(out.stdout) and "argv=" in out.stdout and "env.resolve" in out.stdout


def test_a_failing_resolve_shows_uvs_whole_message_as_one_block(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "hello.py"
    script.write_text(HELLO)
    command = f"{RUNNER} train --name bad --with 'tiny-pkg>=99' {script}"
    screen = Terminal(cli_environ, tmp_path).run(command)[-1]
    out = piped(cli_environ, tmp_path, command.replace("bad", "bad-piped"))
    for lines, code, name in (
        (shown(screen), exit_of(screen), "bad"),
        (out.stdout.splitlines(), out.returncode, "bad-piped"),
    ):
        assert code == 1
        text = "\n".join(lines)
        assert_for_people(lines)
        assert "Traceback" not in text and "Started job" not in text
        *block, summary = lines
        assert block[0] == "  error: No solution found when resolving dependencies", text
        assert all(line.startswith("    ") for line in block[1:]), text  # uv's own, indented
        assert "only tiny-pkg<=1.0 is available" in text, text
        assert summary.startswith(f"job {name} Failed: environment not built: resolving "), text
        assert summary.endswith(f"your requirements are unsatisfiable.; `runner logs {name}`")


class SlowWheels(http.server.SimpleHTTPRequestHandler):
    """Serves a folder of wheels as a find-links page; an install's download of a wheel
    takes `server.seconds`. uv's resolve (`pip compile`) reads whole wheels from a
    find-links page for their metadata: those reads are served at once, so the time goes
    where the test watches it, the install (`pip sync`), as on an index that serves
    metadata apart (PEP 658)."""

    def log_message(self, *args: object) -> None:
        pass

    def copyfile(self, source: object, outputfile: object) -> None:
        data = source.read()  # type: ignore[attr-defined]
        installing = '"pip","sync"' in self.headers.get("User-Agent", "")
        if not (self.path.endswith(".whl") and installing):
            outputfile.write(data)  # type: ignore[attr-defined]
            return
        seconds: float = self.server.seconds  # type: ignore[attr-defined]
        pieces = 28
        step = len(data) // pieces + 1
        for i in range(0, len(data), step):
            outputfile.write(data[i : i + step])  # type: ignore[attr-defined]
            outputfile.flush()  # type: ignore[attr-defined]
            time.sleep(seconds / pieces)


class SlowIndex(http.server.ThreadingHTTPServer):
    seconds = 4.0
    """How long an install's download of a wheel takes."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@contextlib.contextmanager
def slow_index(folder: Path) -> Iterator[SlowIndex]:
    server = SlowIndex(("127.0.0.1", 0), functools.partial(SlowWheels, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def big_wheel_index(tmp_path: Path) -> Iterator[SlowIndex]:
    """An index serving `big-pkg` (a wheel of ~2 MiB that does not compress) slowly."""
    folder = tmp_path / "slow"
    noise = random.Random(7).randbytes(3 * 2**20).hex()
    make_wheel(folder, "big-pkg", "1.0", body=f"NOISE = {noise!r}\n")
    with slow_index(folder) as index:
        yield index


def test_a_cold_build_shows_its_progress_moving_and_a_line_now_and_then_when_piped(
    cli_environ: dict[str, str], tmp_path: Path, big_wheel_index: SlowIndex
) -> None:
    script = tmp_path / "hello.py"
    script.write_text("import big_pkg\nprint('noise', len(big_pkg.NOISE))\n")
    index = big_wheel_index.url
    command = f"{RUNNER} train --name big --find-links {index} --with big-pkg {script}"
    screens = Terminal(cli_environ, tmp_path).run(command, every=0.5)
    assert exit_of(screens[-1]) == 0, screens[-1]
    moving = {
        line
        for screen in screens
        for line in screen.splitlines()
        if "Installing 1 package: 0/1 downloaded, " in line
    }
    assert len(moving) >= 3, screens[-1]  # its time goes on while uv downloads
    got = {re.search(r"downloaded, ([\d.]+ \w+)/", line)[1] for line in moving}  # type: ignore[index]
    assert len(got - {"0 B"}) >= 3, moving  # and so do its bytes, as they come
    final = shown(screens[-1])
    assert not any("Installing 1 package" in line for line in final), final  # then cleared
    assert final[1].startswith("Installed 1 package in "), final

    cache = tmp_path / "second-cache"  # the same build again, piped, from nothing
    big_wheel_index.seconds = PIPED_EVERY + 1  # long enough for a line of its own
    environ = {**cli_environ, "RUNNER_CACHE_DIR": str(cache)}
    out = piped(environ, tmp_path, command.replace("--name big", "--name big-piped"))
    assert out.returncode == 0, out.stdout
    lines = out.stdout.splitlines()
    beats = [line for line in lines if line.startswith("Installing 1 package")]
    assert beats and all(re.search(r"\(\d+(\.\d)?s\)$", beat) for beat in beats), lines
    assert any(re.search(r"downloaded, [1-9][\d.]* \w+/", beat) for beat in beats), beats
    assert not ESCAPE.search(out.stdout)
    assert lines.index(beats[0]) < lines.index(next(x for x in lines if x.startswith("Installed")))


def test_a_conda_install_shows_its_progress_moving_and_then_its_line(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    channel = make_channel(tmp_path)
    wheel = make_wheel(tmp_path / "wheels", "tiny-pkg", "1.0")
    records = channel.solve(["tiny-mod"])
    lock = write_pixi_lock(
        tmp_path / "ws" / "pixi.lock", {"default": records}, channel, pypi=[wheel]
    )
    script = tmp_path / "job.py"
    script.write_text("import tiny_mod\nprint('data', tiny_mod.DATA.strip())\n")
    with serve(channel) as (url, handler):
        stall = handler.stall = threading.Event()  # a download that takes 3 s: a slow mirror

        def release() -> None:
            wait_for(lambda: any("tiny-data" in p for p in handler.requested), timeout=120)
            time.sleep(3)
            stall.set()

        threading.Thread(target=release, daemon=True).start()
        environ = {**cli_environ, "RUNNER_CONDA_MIRRORS": f"{channel.url}={url}"}
        command = f"{RUNNER} train --name conda --lockfile {lock} {script}"
        screens = Terminal(environ, tmp_path).run(command, every=0.5)
    final = shown(screens[-1])
    assert exit_of(screens[-1]) == 0 and "data hello from a conda package" in final, screens[-1]
    moving = {
        line
        for screen in screens
        for line in screen.splitlines()
        if re.search(r"Installing conda packages: \d+ of \d+, .* downloaded \(", line)
    }
    assert len(moving) >= 3, screens  # its time goes on while the mirror stalls
    assert not any("Installing conda packages" in line for line in final), final  # cleared
    assert_for_people(final)


def test_a_job_waiting_for_a_gpu_says_so_and_its_wait_moves(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    environ = {**cli_environ, "RUNNER_DEVICE_ROOT": str(fake_machine(tmp_path / "m", 1))}
    run = cli_runner(environ, tmp_path)
    view = str(JOBS / "gpu_view.py")
    holder = run("train", "--detach", "--gpus", "1", view, "hold").stdout.strip()
    try:
        command = f"{RUNNER} train --name waiter --gpus 1 --timeout 3 {view}"
        screens = Terminal(environ, tmp_path).run(command, every=0.3)
        final = shown(screens[-1])
        assert exit_of(screens[-1]) == 124
        assert f"Waiting for 1 GPU: held by {holder}" in final, final
        moving = {
            line for s in screens for line in s.splitlines() if "(" in line and "Wait" in line
        }
        assert len(moving) >= 2, screens  # its time goes on
        assert final[-1].startswith("job waiter Failed: timed out after 3 s, waiting for GPUs")
        assert_for_people(final)
    finally:
        (Path(environ["RUNNER_STATE_DIR"]) / "jobs" / holder / "work" / "release").touch()
        run("cancel", holder, check=False)


def test_help_on_a_terminal_is_whole_and_grouped(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    term = Terminal(cli_environ, tmp_path, width=100)
    top = shown(term.run(f"{RUNNER} --help")[-1])
    listed = {line.split()[0]: line for line in top if line.startswith("  ") and line.split()}
    for command in ("train", "jobs", "status", "logs", "envs", "lock", "export"):
        assert command in listed, top
    assert not any(line.endswith("...") for line in top[1:]), top  # nothing cut (click cuts)
    assert any("--log-format" in line for line in top) and any("--verbose" in line for line in top)
    train = "\n".join(shown(term.run(f"{RUNNER} train --help")[-1]))
    for title in ("Packages:", "Ranks and devices:", "Sandbox and limits:", "Job:"):
        assert title in train, train
    assert "--log-format" in train and "--verbose" in train  # the global options, here too


@pytest.mark.torch
def test_the_readme_main_job_on_a_terminal(torch_cache: Path, tmp_path: Path) -> None:
    environ = {
        **os.environ,
        "RUNNER_CACHE_DIR": str(torch_cache),
        "RUNNER_STATE_DIR": str(tmp_path / "state"),
    }
    example = Path(__file__).parents[2] / "examples" / "train_ddp.py"
    packages = " ".join(f"--with {req}" for req in TORCH)
    command = f"{RUNNER} train --name main {packages} --nproc-per-node 2 {example}"
    screen = Terminal(environ, tmp_path, width=120).run(command, timeout=600)[-1]
    lines = shown(screen)
    assert_for_people(lines)
    start = lines.index("Started job main")
    assert all(line.startswith(("Resolved ", "Installed ", "Using env ")) for line in lines[:start])
    assert "[rank 0] done: weight 3.00 -2.00 bias 0.50" in lines, screen
    assert re.fullmatch(r"job main (Complete in \S+|Failed: .*); `runner logs main`", lines[-1])
    assert len(lines) <= 25, screen  # a few lines of the runner's, the job's own
