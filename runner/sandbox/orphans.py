"""A step's first process where no pid namespace holds the job (no bubblewrap, or the sandbox
off): when the runner is gone, every process of the job ends, TERM then KILL after the grace.

`setpriv --pdeathsig=TERM -- python -I -S orphans.py GRACE VARIABLE -- ARGV...` starts
ARGV and waits for it. A TERM (the runner died, or it ends the job) goes on to every
process that carries the job's tag (`VARIABLE` in its environment, as the runner's own
`process.end_tree` finds them: torchrun starts each rank in a session of its own, so no
process group holds them all); whatever is left after GRACE seconds is killed. Torch's
own 30 s wait for ranks that ignore TERM no longer decides when a job of a dead runner
ends. Otherwise it exits as ARGV did (a signal's death included), so the runner reads
the step's outcome as before.

Standard library only, and no imports of the runner's: it starts on every step.
"""

import contextlib
import os
import signal
import sys
import time

WATCHED = {signal.SIGTERM, signal.SIGCHLD}


def main() -> None:
    grace, variable, argv = float(sys.argv[1]), sys.argv[2], sys.argv[4:]
    # No handler that could be cut short by a second signal: TERM and the child's end are
    # blocked here and taken one at a time (sigwaitinfo); the child gets the mask it had.
    before = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        _run(argv)
    while True:
        if signal.sigwaitinfo(WATCHED).si_signo == signal.SIGTERM:
            _end_job(f"{variable}={os.environ.get(variable, '')}", grace)
            _exit_as(9)  # as if killed: the job did not end by itself
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            _exit_as(status)


def _end_job(tag: str, grace: float) -> None:
    """TERM every process of the job but this one, then KILL what is left after `grace`."""
    for pid in _tagged(tag):
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _tagged(tag):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)  # the first one, once it ends: no zombie counts
        time.sleep(0.05)
    for _ in range(10):  # one may fork while being killed: again, until none is left
        left = _tagged(tag)
        if not left:
            return
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.02)


def _tagged(tag: str) -> list[int]:
    needle, me, found = f"\0{tag}\0".encode(), os.getpid(), []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as fh:  # noqa: PTH123 - hot loop
                    if needle in b"\0" + fh.read() and not _zombie(entry.name):
                        found.append(int(entry.name))
            except OSError:  # gone, or not this user's
                continue
    return found


def _zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as fh:  # noqa: PTH123 - hot loop
        return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _run(argv: list[str]) -> None:
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"sandbox-runner: cannot run {argv[0]}: {exc.strerror}", file=sys.stderr)
        os._exit(127)


def _exit_as(status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # died of a signal: so does this process, for the runner to read
        if -code != signal.SIGKILL:  # the one signal whose action cannot be set
            signal.signal(-code, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {-code})
        os.kill(os.getpid(), -code)
    os._exit(code)


if __name__ == "__main__":
    main()
