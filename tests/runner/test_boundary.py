"""The sandbox's boundary, played by a hostile job: one attempt per test, real bubblewrap.

The world is a user's: a home with secrets and an agent's socket, a socket in
the host's /tmp (and /run, where the test may write there), the runner's state
and cache outside /tmp (as ~/.local/state and ~/.cache are), and a job B that
runs all along with a token in its environment. Job A (`intruder.py`) tries one
thing each time; every attempt fails, and B completes.
`.ci/run` runs this file as root and again as an ordinary user.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runner.job import execute
from runner.process import end_tree
from runner.sandbox import files, landlock
from runner.settings import RunnerSettings
from runner.spec import JobSpec, ScriptEntry
from runner.store import JobStore
from tests.runner.conftest import JOBS, RunCli, cli_runner
from tests.runner.test_process import alive, wait_for
from tests.runner.test_sandbox import BWRAP, output, records, status

pytestmark = pytest.mark.skipif(not BWRAP, reason="bubblewrap is not installed")

INTRUDER = str(JOBS / "intruder.py")
TOKEN = "tok-" + secrets.token_hex(8)
ROOT = os.geteuid() == 0


class Agent:
    """A Unix socket server, as an ssh agent or a docker daemon: tells whoever connects a secret."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.callers = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if str(path).startswith("@"):  # abstract: in the network namespace, no file to hide
            self.sock.bind("\0" + str(path)[1:])
        else:
            self.sock.bind(str(path))
            path.chmod(0o666)  # as a docker socket: anyone may connect; only the sandbox stops it
        self.sock.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.callers += 1
            with conn:
                conn.sendall(b"agent secret")

    def close(self) -> None:
        self.sock.close()
        if not str(self.path).startswith("@"):
            self.path.unlink(missing_ok=True)


@dataclass
class World:
    root: Path
    home: Path
    cache: Path
    state: Path
    run: RunCli
    environ: dict[str, str]
    victim: str
    agents: dict[str, Agent] = field(default_factory=dict)
    names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def store(self) -> JobStore:
        return JobStore(self.state)

    def attempt(self, action: str, target: str, *options: str) -> str:
        """Job A's one attempt: the line it printed. The job itself always completes."""
        name = f"intruder-{next(self.names)}"
        self.run("train", "--name", name, *options, INTRUDER, action, target)
        (line,) = output(records(self.run, name))
        return line


@pytest.fixture(scope="module")
def world(wheelhouse: Path) -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="runner-world-", dir="/var/tmp"))
    root.chmod(0o755)
    home, cache, state = root / "home", root / ".cache", root / ".local" / "state"
    for folder, secret in ((".ssh", "id_rsa"), (".aws", "credentials")):
        (home / folder).mkdir(parents=True)
        (home / folder / secret).write_text(f"SECRET {secret}\n")
    environ = {
        **os.environ,
        "HOME": str(home),
        "RUNNER_CACHE_DIR": str(cache),
        "RUNNER_STATE_DIR": str(state),
        "RUNNER_NO_INDEX": "1",
        "RUNNER_FIND_LINKS": str(wheelhouse),
        "RUNNER_CANCEL_GRACE": "1",
    }
    run = cli_runner(environ, root)
    victim = run(
        "train", "--detach", "--name", "victim", "--env", f"TOKEN={TOKEN}", str(JOBS / "waiter.py")
    ).stdout.strip()
    store = JobStore(state)
    wait_for(lambda: "ready" in output(list(store.records(victim))), timeout=120)
    here = World(root, home, cache, state, run, environ, victim)
    here.agents["home"] = Agent(home / "agent.sock")
    here.agents["tmp"] = Agent(Path(tempfile.mktemp(prefix="agent-", suffix=".sock", dir="/tmp")))
    # an X server's, a session bus's or a container shim's, as the host's network has them
    here.agents["abstract"] = Agent(Path(f"@runner-test-{secrets.token_hex(4)}"))
    if os.access("/run", os.W_OK):
        here.agents["run"] = Agent(Path(f"/run/runner-test-{secrets.token_hex(4)}.sock"))
    try:
        yield here
        # B lived through every attempt, and ends as it would have
        (store.workdir(victim) / "release").touch()
        wait_for(lambda: store.load(victim).done, timeout=60)
        assert store.load(victim).status == "Complete", store.load(victim)
        assert output(list(store.records(victim)))[-1] == "released"
        assert not any(agent.callers for agent in here.agents.values())
    finally:
        for agent in here.agents.values():
            agent.close()
        for record in store.jobs():
            end_tree(record.tag, 0)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("secret", [".ssh/id_rsa", ".aws/credentials"])
def test_the_users_secrets_are_out_of_reach(world: World, secret: str) -> None:
    assert (world.home / secret).is_file()
    assert world.attempt("read", str(world.home / secret)).startswith("refused")


@pytest.mark.parametrize("what", ["job.json", "log.jsonl", "work"])
def test_another_jobs_record_log_and_work_are_out_of_reach(world: World, what: str) -> None:
    path = world.store.dir(world.victim) / what
    assert TOKEN in path.read_text() if what == "job.json" else path.exists()
    action = "list" if what == "work" else "read"
    assert world.attempt(action, str(path)).startswith("refused")


def test_no_jobs_folder_is_visible_but_its_own(world: World) -> None:
    line = world.attempt("list", str(world.store.root))
    assert line == "list: intruder-" + str(int(line.rsplit("-", 1)[1]))


@pytest.mark.parametrize("where", ["home", "tmp", "run", "abstract"])
def test_host_sockets_are_out_of_reach(world: World, where: str) -> None:
    if where == "run" and "run" not in world.agents:  # an ordinary user cannot plant one there
        sockets = [p for p in Path("/run").rglob("*") if _is_socket(p)]
        assert world.attempt("list", "/run") == "list: ", "the host's /run shows through"
        for path in sockets[:3]:  # and what the host keeps there is not reached
            assert world.attempt("connect", str(path)).startswith("refused")
        return
    agent = world.agents[where]
    if where == "abstract" and landlock.abi() < landlock.SCOPES_ABI:  # Landlock scopes it
        name = f"abstract-{next(world.names)}"  # a kernel without: the job's log says so
        world.run("train", "--name", name, str(JOBS / "report.py"), "X")
        (degraded,) = [r for r in records(world.run, name) if r["event"] == "sandbox.degraded"]
        assert "the host's abstract Unix sockets (network on)" in degraded["not_enforced"]
        return
    assert world.attempt("connect", str(agent.path)).startswith("refused")
    assert agent.callers == 0


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.lstat().st_mode)
    except OSError:
        return False


@pytest.mark.parametrize("what", ["job.json", "log.jsonl", "cancel"])
def test_a_job_cannot_forge_its_own_record(world: World, what: str) -> None:
    # the intruder's own folder: the one it will get, by its name
    name = f"intruder-{next(world.names)}"
    target = world.store.dir(name) / what
    world.run("train", "--name", name, INTRUDER, "write", str(target))
    (line,) = output(records(world.run, name))
    assert line.startswith("refused"), line
    assert status(world.run, name)["status"] == "Complete"
    assert "planted" not in (target.read_text() if target.exists() else "")


def _writable_targets(world: World) -> dict[str, Path]:
    (env,) = (world.cache / "envs").iterdir()
    base = Path(os.path.realpath(env / "bin" / "python")).parents[1]
    return {
        "env": env / "planted.py",
        "base": base / "planted-by-a-job.txt",
        "cache": world.cache / "planted.txt",
        "state": world.state / "planted.txt",
        "records": world.store.root / "planted.txt",
    }


@pytest.mark.parametrize("where", ["env", "base", "cache", "state", "records"])
def test_a_job_writes_nothing_of_the_runners(world: World, where: str) -> None:
    target = _writable_targets(world)[where]
    line = world.attempt("write", str(target))
    # refused, or written into the job's own empty stand-in for the hidden folder
    assert not target.exists(), f"{line}: {target} was written on the host"


def test_a_job_cannot_signal_another_jobs_processes(world: World) -> None:
    steps = world.store.load(world.victim).steps
    assert steps and steps[0].process
    pid = steps[0].process.pid
    assert alive(pid)
    assert world.attempt("kill", str(pid)).startswith("refused")
    assert alive(pid) and world.store.load(world.victim).status == "Running"


def test_a_process_that_drops_its_tag_still_ends_with_its_job(world: World) -> None:
    mark = f"left-behind-{secrets.token_hex(4)}"
    assert world.attempt("escape", mark) == "left behind"
    wait_for(lambda: not _with_mark(mark), timeout=10)


def _with_mark(mark: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_the_job_runs_without_capabilities_or_new_privileges(world: World) -> None:
    line = world.attempt("status", "/proc/self/status")
    assert "CapEff:0000000000000000" in line and "NoNewPrivs:1" in line, line


def test_the_job_has_its_own_ipc_and_hostname(world: World) -> None:
    line = world.attempt("namespaces", "ipc uts")
    mine = json.loads(line.removeprefix("namespaces: "))
    for kind in ("ipc", "uts"):
        assert mine[kind] != str(Path(f"/proc/self/ns/{kind}").readlink()), kind


def test_names_resolve_with_network_on(world: World) -> None:
    assert world.attempt("resolve", "localhost") in ("resolved: 127.0.0.1", "resolved: ::1")


# -- what the job is given: a HOME, the data cache, mounts, the folder it was run from --------


def _downloads(world: World, action: str, *options: str) -> dict[str, str | None]:
    name = f"downloads-{next(world.names)}"
    world.run("train", "--name", name, *options, str(JOBS / "downloads.py"), action)
    (line,) = output(records(world.run, name))
    seen: dict[str, str | None] = json.loads(line)
    assert seen["home"] == str(world.store.dir(name) / "home")
    return seen


def test_each_job_has_a_private_home_and_all_share_the_data_cache(world: World) -> None:
    data = world.cache / "data"
    first = _downloads(world, "save")
    assert first["hf_home"] == str(data / "huggingface")
    assert first["torch_home"] == str(data / "torch")
    assert (data / "huggingface" / "hub" / "weights.txt").read_text() == "weights"
    second = _downloads(world, "load")
    assert second["weights"] == "weights"  # the download is reused
    assert second["mine"] is None  # the other job's HOME is its own
    shown = json.loads(world.run("data", "show", "--json").stdout)
    assert shown["path"] == str(data) and "huggingface" in shown["entries"]
    assert shown["size_bytes"] > 0
    # cleaning waits for the running job B unless forced
    refused = world.run("data", "clean", check=False)
    assert refused.returncode == 1 and world.victim in refused.stderr
    world.run("data", "clean", "--force")
    assert not any(data.iterdir())
    assert _downloads(world, "load")["weights"] is None


@pytest.mark.skipif(not ROOT, reason="root's jobs only: an ordinary user's data cache is its own")
def test_a_data_cache_that_root_filled_before_is_given_to_roots_job_user(world: World) -> None:
    """As after an upgrade: root's jobs wrote the data cache as root; now they run as
    `sandbox-runner`, which takes it over, whole, and writes into what is there."""
    data = world.cache / "data"
    (data / "huggingface" / "hub").mkdir(parents=True, exist_ok=True)
    (data / "huggingface" / "hub" / "weights.txt").write_text("old")
    for path in (data, *data.rglob("*")):
        os.lchown(path, 0, 0)
    assert _downloads(world, "save")["weights"] == "weights"
    assert (data / "huggingface" / "hub" / "weights.txt").stat().st_uid != 0


def test_without_the_data_cache_downloads_stay_in_the_jobs_home(world: World) -> None:
    _downloads(world, "save")
    seen = _downloads(world, "load", "--no-data-cache")
    assert seen["hf_home"] is None and seen["weights"] is None


def test_a_read_write_mount_takes_the_jobs_output(world: World) -> None:
    outputs = world.root / "outputs"
    outputs.mkdir(exist_ok=True)
    mount = ("--mount", f"{outputs}:/tmp/out:rw")
    if ROOT:  # root's jobs run as a user of their own: the folder must be that user's to write
        refused = world.run("train", *mount, INTRUDER, "write", "/tmp/out/x", check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert f"the mount {outputs}:/tmp/out:rw: {outputs} is not writable by it" in (
            refused.stderr
        )
        assert "chown sandbox-runner it, or set RUNNER_JOB_USER=root" in refused.stderr
        shutil.chown(outputs, "sandbox-runner")
    line = world.attempt("write", "/tmp/out/result.txt", *mount)
    assert line == "wrote"
    assert (outputs / "result.txt").read_text() == "planted by a hostile job\n"


def test_a_read_only_mount_is_read_only(world: World) -> None:
    dataset = world.home / "dataset"  # in the home: hidden unless mounted
    dataset.mkdir(exist_ok=True)
    (dataset / "train.csv").write_text("x,y\n")
    mount = ("--mount", str(dataset))  # read-only unless :rw, at the same path
    assert world.attempt("read", str(dataset / "train.csv"), *mount) == "read: x,y"
    assert world.attempt("write", str(dataset / "new.csv"), *mount).startswith("refused")
    assert world.attempt("read", str(dataset / "train.csv")).startswith("refused")  # unmounted
    # a path the user names is shown, even inside the home
    aws = f"{world.home / '.aws'}:ro"
    assert world.attempt("read", str(world.home / ".aws/credentials"), "--mount", aws) == (
        "read: SECRET credentials"
    )


def test_a_bad_mount_is_refused_in_one_line(world: World) -> None:
    for mount, said in (
        (f"{world.root}/missing", "does not exist"),
        (f"{world.root}:/no/such/folder", "does not exist: the sandbox makes no folders"),
        (f"{world.root}:relative", "must be an absolute path"),
        (f"{world.root}:/tmp/x:rx", "is not SOURCE[:TARGET][:ro|rw]"),
    ):
        proc = world.run("train", "--mount", mount, INTRUDER, "list", "/", check=False)
        assert proc.returncode == 2 and said in proc.stderr, (mount, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_a_module_runs_from_the_folder_it_was_started_in(world: World) -> None:
    project = world.root / "project"
    (project / "pkg").mkdir(parents=True, exist_ok=True)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "main.py").write_text(
        "from pathlib import Path\nprint(Path('data.txt').resolve().parent.name, "
        "Path(__file__).with_name('vocab.txt').read_text())\n"
    )
    (project / "pkg" / "vocab.txt").write_text("vocab beside the module")
    run = cli_runner(dict(world.environ), project)
    run("train", "--name", "module-job", "-m", "pkg.main")
    assert output(records(run, "module-job")) == ["work vocab beside the module"]


def test_a_script_in_the_home_itself_does_not_share_the_home(world: World) -> None:
    script = world.home / "intruder.py"
    shutil.copy(INTRUDER, script)
    world.run("train", "--name", "in-home", str(script), "read", str(world.home / ".ssh/id_rsa"))
    recs = records(world.run, "in-home")
    assert output(recs)[0].startswith("refused")
    (note,) = [r for r in recs if r["event"] == "sandbox.not_shared"]
    assert str(world.home) in note["notes"][0]


def test_a_system_file_that_links_into_a_hidden_folder_is_still_read(
    monkeypatch: pytest.MonkeyPatch, settings: RunnerSettings, store: JobStore, tmp_path: Path
) -> None:
    """As /etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf under systemd-resolved:
    /run is hidden, and name lookups still work because the link's target is bound back."""
    home = Path(tempfile.mkdtemp(prefix="runner-home-", dir="/var/tmp"))
    try:
        (home / "resolve").mkdir()
        (home / "resolve" / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
        link = home.with_name(home.name + "-resolv.conf")
        link.symlink_to(home / "resolve" / "stub-resolv.conf")
        monkeypatch.setenv("HOME", str(home))  # hidden, as /run is
        monkeypatch.setattr(files, "SYSTEM_FILES", (*files.SYSTEM_FILES, str(link)))
        store.create(JobSpec(name="resolv", entry=_script(INTRUDER, "read", str(link))))
        assert execute(store, "resolv", settings).status == "Complete"
        assert output(list(store.records("resolv"))) == ["read: nameserver 127.0.0.53"]
        store.create(JobSpec(name="hidden", entry=_script(INTRUDER, "list", str(home))))
        execute(store, "hidden", settings)
        assert output(list(store.records("hidden"))) == ["list: resolve"]  # the file alone
    finally:
        monkeypatch.undo()
        link.unlink(missing_ok=True)
        shutil.rmtree(home, ignore_errors=True)


def _script(path: str, *argv: str) -> ScriptEntry:
    return ScriptEntry(kind="script", target=path, argv=argv)


# -- the kernel, the system calls and root: what a job reaches that is the machine's ---------


def _attempt(world: World, action: str, target: str, **environ: str) -> tuple[str, list[dict]]:
    """Job A's one attempt with settings of its own: the line it printed, and its records."""
    name = f"intruder-{next(world.names)}"
    run = cli_runner({**world.environ, **environ}, world.root)
    run("train", "--name", name, INTRUDER, action, target)
    recs = records(run, name)
    (line,) = output(recs)
    return line, recs


AS_ROOT_INSIDE = {"RUNNER_JOB_USER": "root"}
"""Root's jobs as uid 0 inside (without capabilities): what the other layers hold alone."""


@pytest.mark.parametrize("inside", ["default", "uid-0"])
@pytest.mark.parametrize(
    "path", ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sysrq-trigger"]
)
def test_kernel_settings_cannot_be_opened_for_writing(world: World, path: str, inside: str) -> None:
    """`core_pattern` is opened and closed, never written: the kernel would run what it names."""
    if inside == "uid-0" and not ROOT:
        pytest.skip("an ordinary user's jobs run as that user; there is no uid 0 to keep")
    line, _ = _attempt(world, "open-write", path, **(AS_ROOT_INSIDE if inside == "uid-0" else {}))
    assert line.startswith("refused"), line
    if inside == "uid-0" and Path(path).exists():
        # root inside passes the file's permissions: the read-only /proc/sys is what holds
        assert "Read-only file system" in line, line


@pytest.mark.parametrize("path", ["/proc/keys", "/proc/timer_list", "/proc/kcore"])
def test_kernel_memory_keys_and_timers_are_masked(world: World, path: str) -> None:
    line, _ = _attempt(world, "read", path, **(AS_ROOT_INSIDE if ROOT else {}))
    assert line in ("read: ", "refused: PermissionError: Permission denied") or (
        not Path(path).exists() and line.startswith("refused: FileNotFoundError")
    ), line


def test_firmware_tables_are_masked(world: World) -> None:
    assert any(Path("/sys/firmware").iterdir()), "nothing to mask on this host"
    line, _ = _attempt(world, "list", "/sys/firmware", **(AS_ROOT_INSIDE if ROOT else {}))
    assert line == "list: ", line


def test_a_job_of_roots_runs_as_an_unprivileged_user(world: World) -> None:
    line, recs = _attempt(world, "whoami", "-")
    uid, gid = (os.getuid(), os.getgid())
    if ROOT:
        import pwd

        who = pwd.getpwnam("sandbox-runner")
        uid, gid = who.pw_uid, who.pw_gid
        (said,) = [r for r in recs if r["event"] == "sandbox.identity"]
        assert (said["user"], said["uid"]) == ("sandbox-runner", uid)
    assert line == f"whoami: {uid} {gid} []" if ROOT else line.startswith(f"whoami: {uid} {gid}")
    assert world.attempt("read", "/etc/shadow").startswith("refused")
    status_line = world.attempt("status", "/proc/self/status")
    assert "CapEff:0000000000000000" in status_line and "CapBnd:0000000000000000" in status_line


@pytest.mark.skipif(not ROOT, reason="root's jobs only: an ordinary user's run as that user")
def test_uid_0_inside_is_said_and_strict_refuses_it(world: World) -> None:
    line, recs = _attempt(world, "whoami", "-", **AS_ROOT_INSIDE)
    assert line.startswith("whoami: 0 0 ")
    (degraded,) = [r for r in recs if r["event"] == "sandbox.degraded"]
    assert any("an unprivileged identity" in layer for layer in degraded["not_enforced"])
    assert "RUNNER_JOB_USER is root" in degraded["cause"]
    run = cli_runner({**world.environ, **AS_ROOT_INSIDE}, world.root)
    refused = run("train", "--sandbox", "strict", INTRUDER, "whoami", "-", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "sandbox is strict but cannot enforce: an unprivileged identity" in refused.stderr
    nobody_such = cli_runner({**world.environ, "RUNNER_JOB_USER": "no-such-user-x"}, world.root)
    refused = nobody_such("train", INTRUDER, "whoami", "-", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "root's jobs are to run as 'no-such-user-x' (RUNNER_JOB_USER), and there is no such" in (
        refused.stderr
    )


@pytest.mark.parametrize(
    ("action", "target"),
    [("mount", "/tmp"), ("unshare-user", "-"), ("ptrace", "child"), ("ptrace", "victim")],
)
def test_the_system_call_filter_refuses(world: World, action: str, target: str) -> None:
    """As uid 0 inside, where root runs: the filter holds there alone. Another job's process
    is out of sight too (its pid namespace); the job's own child is the filter's alone."""
    sibling = target == "victim"
    if sibling:
        steps = world.store.load(world.victim).steps
        assert steps and steps[0].process
        target = str(steps[0].process.pid)
    line, _ = _attempt(world, action, target, **(AS_ROOT_INSIDE if ROOT else {}))
    assert line.startswith("refused"), line
    if not sibling:
        assert "Operation not permitted" in line, line
    status_line = world.attempt("status", "/proc/self/status")
    assert "Seccomp:2" in status_line, status_line
