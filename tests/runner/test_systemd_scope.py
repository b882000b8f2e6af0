"""An ordinary user's runner asks the user's systemd for a delegated scope of its own.

A real systemd user manager (`systemd --user`) is started for an ordinary user
(`nobody`) in a cgroup delegated to that user, as logind and `user@.service` set
one up at login, in a mount namespace where `/run/systemd/system` says the
machine runs systemd (this CI machine's init is not systemd). The runner's scope
call then goes over that user's own D-Bus to that manager, as it does on a
desktop or a server with `systemd --user`.

This machine's memory and pids controllers live in cgroup v1, where a user
manager has no controllers to delegate. Here: the move itself, that it moves no
one else, that the scope is the user's, that systemd collects it when the runner
ends, that a scope without the memory controller is named as such, and the
refusal when no user manager answers. The limits held in such a scope, from a
real login on a cgroup v2 machine run by systemd: `tests/vm/systemd-check.sh`
boots one and runs this file there as an ordinary user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import cgroup
from tests.runner.conftest import JOBS, RunCli
from tests.runner.test_sandbox import records, status

NOBODY = 65534
SYSTEMD = Path("/lib/systemd/systemd")
RUNNER = Path(__file__).parents[2] / "runner"
PYTHON = os.path.realpath(sys.executable)
"""The interpreter itself, not the venv's link to it: the venv may lie where `nobody`
cannot read (under /root), so the probe runs with the base interpreter and a copy of
the module it needs."""


def _unified_mount() -> Path | None:
    """Where the kernel's cgroup v2 hierarchy is mounted: alone, or beside v1's."""
    for where in (cgroup.ROOT, cgroup.ROOT / "unified"):
        if (where / "cgroup.procs").exists() and (where / "cgroup.max.depth").exists():
            return where
    return None


PROBE = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from concurrent.futures import ThreadPoolExecutor
    sys.path.insert(0, sys.argv[1])
    from runner import cgroup
    unified = sys.argv[2]
    with ThreadPoolExecutor(4) as pool:  # as the SDK backend's jobs start
        (attempt, *others) = pool.map(lambda _: cgroup.systemd_scope(), range(4))
    assert all(other == attempt for other in others), (attempt, others)
    path = cgroup._memberships()[""]
    here = unified + path
    show = ["systemctl", "--user", "show", "--value", "-p", "Delegate", str(attempt.unit)]
    seen = {
        "unit": attempt.unit, "why": attempt.why, "path": path, "pid": os.getpid(),
        "procs": open(here + "/cgroup.procs").read().split(),
        "delegated": subprocess.run(show, capture_output=True, text=True).stdout.strip(),
        "has": open(here + "/cgroup.controllers").read().split(),
    }
    cgroup.ROOT = cgroup.Path(unified)  # the v2 hierarchy, where a hybrid machine has it too
    seen |= {"memory": cgroup.available("memory"), "why_not": cgroup.why_not("memory")}
    print(json.dumps(seen), flush=True)
    """
)
"""Ask for a scope as a runner does; say where this process is then, and who else is;
then whether a job's memory cgroup can be made in the scope, and if not, why."""

RIG = textwrap.dedent(
    """
    set -eu
    home=$(grep '^0::' /proc/self/cgroup | cut -d: -f3)
    mkdir "$UNIFIED/$NAME"
    # at the end, even a failed one: step out, then end the user's processes
    trap 'echo $$ > "$UNIFIED$home/cgroup.procs"; echo 1 > "$UNIFIED/$NAME/cgroup.kill"' EXIT
    chown -R "$USERID:$USERID" "$UNIFIED/$NAME"
    echo $$ > "$UNIFIED/$NAME/cgroup.procs"
    if [ -d "$LEGACY" ]; then
        mkdir "$LEGACY/$NAME" && chown -R "$USERID:$USERID" "$LEGACY/$NAME"
        echo $$ > "$LEGACY/$NAME/cgroup.procs"
    fi
    mkdir -p /run/systemd && mount -t tmpfs none /run/systemd && mkdir /run/systemd/system
    as_user() { setpriv --reuid="$USERID" --regid="$USERID" --clear-groups "$@"; }
    as_user "$SYSTEMD" --user > "$DIR/systemd.log" 2>&1 &
    for _ in $(seq 200); do [ -S "$XDG_RUNTIME_DIR/bus" ] && break; sleep 0.05; done
    as_user "$PYTHON" -I -c "$PROBE" "$DIR/tree" "$UNIFIED"
    for _ in $(seq 100); do
        [ -z "$(ls -d "$UNIFIED/$NAME"/app.slice/sandbox-runner-*.scope 2>/dev/null)" ] && break
        sleep 0.05
    done
    ls -d "$UNIFIED/$NAME"/app.slice/sandbox-runner-*.scope 2>/dev/null || echo collected
    """
)


@pytest.fixture
def user_dir() -> Iterator[Path]:
    """A folder `nobody` may enter, holding its runtime dir, its HOME and the probe's tree."""
    top = Path(tempfile.mkdtemp(prefix="sr-scope-", dir="/tmp"))
    top.chmod(0o755)
    for private in ("run", "home"):
        (top / private).mkdir(mode=0o700)
        os.chown(top / private, NOBODY, NOBODY)
    (top / "tree" / "runner").mkdir(parents=True)
    for module in ("__init__.py", "cgroup.py", "process.py"):
        shutil.copy(RUNNER / module, top / "tree" / "runner" / module)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def _remove(path: Path) -> None:
    """End every process in the cgroup tree at `path`, then remove it, deepest first."""
    if not path.is_dir():
        return
    kill = path / "cgroup.kill"
    if kill.exists():
        kill.write_text("1")
    else:  # v1's name=systemd hierarchy: its processes were killed through v2's
        for pid in (path / "cgroup.procs").read_text().split():
            subprocess.run(["kill", "-9", pid], check=False)
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        cgroup.rmdir(child, wait=5.0)
    cgroup.rmdir(path, wait=5.0)


@pytest.mark.skipif(os.geteuid() != 0, reason="root sets up the user's manager, as logind does")
@pytest.mark.skipif(
    not (SYSTEMD.exists() and shutil.which("busctl") and _unified_mount()),
    reason="needs systemd (its binary and busctl) and a cgroup v2 hierarchy",
)
def test_the_user_s_systemd_gives_the_runner_a_delegated_scope_of_its_own(
    user_dir: Path,
) -> None:
    unified = _unified_mount()
    assert unified is not None
    name = f"srtest-scope-{os.getpid()}"
    legacy = cgroup.ROOT / "systemd"  # systemd's own v1 hierarchy, on a hybrid machine
    environ = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "UNIFIED": str(unified),
        "LEGACY": str(legacy) if (legacy / "cgroup.procs").exists() else "",
        "NAME": name,
        "USERID": str(NOBODY),
        "SYSTEMD": str(SYSTEMD),
        "PYTHON": PYTHON,
        "PROBE": PROBE,
        "DIR": str(user_dir),
        "HOME": str(user_dir / "home"),
        "XDG_RUNTIME_DIR": str(user_dir / "run"),
    }
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", RIG],
            check=False,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        _remove(unified / name)
        if environ["LEGACY"]:
            _remove(legacy / name)
    log = (user_dir / "systemd.log").read_text(errors="replace")
    assert done.returncode == 0, done.stderr + log
    probe, collected = done.stdout.splitlines()[-2:]
    seen = json.loads(probe)
    unit = seen["unit"]
    assert unit is not None, seen["why"]
    assert unit.startswith(cgroup.PREFIX) and unit.endswith(".scope")
    assert seen["path"].endswith(f"/{unit}")  # the kernel has the runner there
    assert seen["path"].startswith(f"/{name}/")  # under the user's own manager
    assert seen["procs"] == [str(seen["pid"])]  # alone: its parent shell was not moved
    assert seen["delegated"] == "yes"  # the runner may make its nodes' cgroups in it
    assert cgroup.scope_of(Path(seen["path"]) / "node-0") == unit
    assert collected == "collected"  # systemd removes the scope once the runner is gone
    if "memory" in seen["has"]:  # a cgroup v2 machine whose user@.service delegates memory
        assert seen["memory"] and seen["why_not"] == ""
    else:  # here: cgroup v1 holds memory, so the user's manager has none to delegate
        assert not seen["memory"]
        assert seen["why_not"].startswith(
            f"; systemd gave the scope {unit} without the memory controller (it has: "
        )
        assert "Delegate=memory pids" in seen["why_not"]


def _logged_in_to_systemd() -> bool:
    """An ordinary user's login on a cgroup v2 machine whose init is systemd: pam_systemd
    started the user's manager and gave the login its bus, as on a desktop or a server."""
    bus = Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent"), "bus")
    return os.geteuid() != 0 and cgroup.unified() and bus.is_socket()


@pytest.mark.skipif(
    not _logged_in_to_systemd(),
    reason="needs an ordinary user logged in to a cgroup v2 machine run by systemd "
    "(this CI machine's init is not systemd): tests/vm/systemd-check.sh boots one",
)
def test_an_ordinary_user_s_limits_hold_in_the_scope_the_user_s_systemd_gives(
    runner_cli: RunCli,
) -> None:
    """The whole path, as a user meets it: `runner train --memory/--processes` from a login
    shell (so the runner shares the login's session scope), the runner's scope from the
    user's manager, the jobs' cgroups made in it, and the kernel holding the limits."""
    proc = runner_cli("train", "--name", "hog", "--memory", "150M", str(JOBS / "hog.py"), "1000",
                      check=False)  # fmt: skip
    assert proc.returncode == 137, proc.stdout + proc.stderr  # the job's: killed
    result = status(runner_cli, "hog")
    assert result["status"] == "Failed"
    assert "memory limit of 150.0 MiB exceeded" in result["reason"], result
    proc = runner_cli("train", "--name", "forky", "--processes", "10",
                      str(JOBS / "spawner.py"), "30", check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reason = status(runner_cli, "forky")["reason"]
    assert reason.startswith("node-0 exited with code 1: process limit of 10 reached"), reason
    for name in ("hog", "forky"):
        recs = records(runner_cli, name)
        (held,) = [r for r in recs if r["event"] == "sandbox.limits"]
        kind = "memory" if name == "hog" else "processes"
        assert held[kind] == "cgroup v2", held  # not an rlimit: the kernel's count
        scope = held["systemd_scope"]
        assert scope.startswith(cgroup.PREFIX) and scope.endswith(".scope"), held
        node = Path(held["cgroup"])
        assert node.parent.name == scope  # the node's cgroup, in the runner's own scope
        assert f"/user@{os.getuid()}.service/" in str(node)  # from the user's own manager
        for degraded in (r for r in recs if r["event"] == "sandbox.degraded"):
            assert not any("limit" in layer for layer in degraded["not_enforced"]), degraded
    runner_cli("train", "--name", "within", "--memory", "150M", "--processes", "10",
               str(JOBS / "spawner.py"), "3")  # fmt: skip
    assert status(runner_cli, "within")["status"] == "Complete"


def test_without_a_user_manager_the_runner_stays_where_it_is_and_says_why(
    tmp_path: Path,
) -> None:
    """No user bus (a server without `systemd --user`, a container): no move, one reason."""
    probe = (
        "import json, sys; from runner import cgroup; a = cgroup.systemd_scope();"
        "print(json.dumps([a.unit, a.why, cgroup._memberships()[''], cgroup.why_not('memory')]))"
    )
    environ = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    environ["XDG_RUNTIME_DIR"] = str(tmp_path)  # no bus socket in it
    before = Path("/proc/self/cgroup").read_text()
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    unit, why, path, refused = json.loads(done.stdout)
    assert unit is None
    assert why.startswith(("no systemd user manager gave a scope: ", "no systemd here"))
    assert "\n" not in why and why.strip() == why and len(why) > len("no systemd here")
    assert refused == f"; {why}"  # what `sandbox.degraded` adds to "no cgroup can be made"
    own = next(line[3:] for line in before.splitlines() if line.startswith("0::"))
    assert path == own  # not moved: the child shares the test's cgroup


def test_sandbox_limits_names_the_scope_that_holds_them() -> None:
    """The job's `sandbox.limits` record: what holds each limit, in which cgroup, and the
    runner's systemd scope when it lies in one (paths as a cgroup v2 machine has them)."""
    user = cgroup.ROOT / "user.slice" / "user-1000.slice"
    scope = "sandbox-runner-41.7.scope"
    node = user / "user@1000.service" / "app.slice" / scope / "sandbox-runner-41.7-job-0"
    held = cgroup.JobCgroup(memory=node, pids=node).held(memory=True, processes=True)
    kind = f"cgroup v{2 if cgroup.unified() else 1}"
    assert held == {
        "memory": kind,
        "processes": kind,
        "cgroup": str(node),
        "systemd_scope": scope,
    }
    session = user / "session-3.scope" / "sandbox-runner-41.7-job-0"  # not the runner's scope
    held = cgroup.JobCgroup(memory=session, pids=None).held(memory=True, processes=True)
    assert held["cgroup"] == str(session) and "systemd_scope" not in held
    assert held["processes"].startswith("rlimit")
    held = cgroup.JobCgroup(memory=None, pids=None).held(memory=True, processes=False)
    assert held == {"memory": "rlimit (address space per process)"}
