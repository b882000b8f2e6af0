"""A node's ranks started without torchrun's agent: the program that starts and watches them.

Copied into the job's folder and run by the env's python inside the node's sandbox:

    python ranks.py GRACE N cold -- ARGV...

starts N ranks, each `ARGV...` (the env's python and the job's program) with the variables
torchrun gives worker I (`RANK`, `LOCAL_RANK`, `ROLE_RANK`; those every rank shares are in
this program's own environment). Each rank's lines go on tagged `[rankI]:`, as torchrun's
`--tee` tags them. It ends as torchrun's agent ends a node whose worker failed: the other
ranks get TERM, KILL after GRACE seconds, and the node exits with the failed rank's code
(or dies of its signal); TERM, INT and HUP go on to every rank.

    python ranks.py GRACE N warm CONTROL READY STANDBY WARM_TORCH PRELOADS...

is a standby for such a node: it starts N standbys (`python -c STANDBY CONTROL_I READY_I
WARM_TORCH PRELOADS...`, `warm/program.py`), says ready on READY once all of them are
(with what rank 0 imported), and when its job comes on CONTROL (argv, environment, cwd:
a cold start's argv) hands each standby its rank's; from then on it is the node above.

Standard library only, and none of the runner's modules: it runs in the job's env.
"""

import marshal
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Any, BinaryIO

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Node:
    """The ranks, their output relayed line by line, and how the node ends."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.ranks: list[subprocess.Popen[bytes]] = []
        self.selector = selectors.DefaultSelector()
        self.pending: dict[int, bytes] = {}
        self.failed: tuple[int, int] | None = None
        self.told: int | None = None
        """A signal the node was sent (and passed on): its ranks end because of it."""
        self.kill_at: float | None = None
        self.wakeup = os.pipe()
        os.set_blocking(self.wakeup[0], False)
        os.set_blocking(self.wakeup[1], False)
        signal.set_wakeup_fd(self.wakeup[1], warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the pipe
        for sig in FORWARDED:
            signal.signal(sig, self._told)
        self.selector.register(self.wakeup[0], selectors.EVENT_READ, None)

    def start(self, argv: list[str], env: dict[str, str], fds: tuple[int, ...] = ()) -> None:
        rank = len(self.ranks)
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=fds
        )
        self.ranks.append(proc)
        prefix = f"[rank{rank}]:".encode()
        for stream, out in ((proc.stdout, sys.stdout.buffer), (proc.stderr, sys.stderr.buffer)):
            assert stream is not None
            self.pending[stream.fileno()] = b""
            self.selector.register(stream, selectors.EVENT_READ, (prefix, out))

    def _told(self, sig: int, frame: object) -> None:
        self.told = sig
        self._forward(sig, frame)

    def _forward(self, sig: int, _frame: object) -> None:
        for proc in self.ranks:
            if proc.poll() is None:
                proc.send_signal(sig)

    def step(self, timeout: float | None) -> list[int]:
        """Relay what the ranks printed, note the ranks that ended; the readable other fds."""
        if self.kill_at is not None:
            timeout = max(0.0, min(timeout or 1e9, self.kill_at - time.monotonic()))
        other = []
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                while True:
                    try:
                        if not os.read(self.wakeup[0], 512):
                            break
                    except BlockingIOError:
                        break
            elif isinstance(key.data, tuple):
                self._relay(key.fd, *key.data)
            else:
                other.append(key.fd)
        self._reap()
        return other

    def _relay(self, fd: int, prefix: bytes, out: BinaryIO) -> None:
        data = os.read(fd, 1 << 16)
        lines = (self.pending[fd] + data).split(b"\n")
        self.pending[fd] = lines.pop()
        if not data:  # the rank closed it: its last piece, if any, as a line
            self.selector.unregister(fd)
            rest = self.pending.pop(fd)
            lines += [rest] if rest else []
        if lines:
            out.write(b"".join(prefix + line + b"\n" for line in lines))
            out.flush()

    def _reap(self) -> None:
        for rank, proc in enumerate(self.ranks):
            code = proc.poll()
            if code not in (None, 0) and self.failed is None:
                self.failed = (rank, code)
                how = f"code {code}" if code > 0 else f"signal {-code}"
                if self.told is None:  # told to end, the ranks end: nothing to explain
                    print(
                        f"sandbox-runner: rank {rank} exited with {how}; ending the other ranks",
                        file=sys.stderr,
                        flush=True,
                    )
                self._forward(signal.SIGTERM, None)
                self.kill_at = time.monotonic() + self.grace
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            for proc in self.ranks:
                if proc.poll() is None:
                    proc.kill()

    def abandon(self) -> None:
        """A standby of the node ended before its job came: so do the others, and the node."""
        for proc in self.ranks:
            proc.kill()
            proc.wait()
        sys.exit(3)  # each said why on its stderr

    def any_ended(self) -> bool:
        """A rank ended (before its job: the node's standby is no longer whole)."""
        return any(p.poll() is not None for p in self.ranks)

    def running(self) -> bool:
        return any(p.poll() is None for p in self.ranks) or len(self.pending) > 0

    def run(self) -> None:
        """Watch the ranks to their end, then end as the node: see the module's text."""
        ended_at = None
        while self.running():
            self.step(1.0 if ended_at is None else 0.1)
            if ended_at is None and all(p.poll() is not None for p in self.ranks):
                ended_at = time.monotonic()  # a rank's child may hold its pipe: not for long
            if ended_at is not None and time.monotonic() - ended_at > 1.0:
                break
        if self.failed is None:
            sys.exit(0)
        code = self.failed[1]
        if code < 0:  # died of a signal: so does the node, for the runner to read
            if -code != signal.SIGKILL:
                signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        sys.exit(code)


def rank_environ(env: dict[str, str], rank: int) -> dict[str, str]:
    """What torchrun gives worker `rank` of a one-node job beyond what every worker gets."""
    return {**env, "RANK": str(rank), "LOCAL_RANK": str(rank), "ROLE_RANK": str(rank)}


def cold(node: Node, count: int, argv: list[str]) -> None:
    for rank in range(count):
        node.start(argv, rank_environ(dict(os.environ), rank))
    node.run()


def warm(node: Node, count: int, args: list[str]) -> None:
    control, ready, source, torch, preloads = int(args[0]), int(args[1]), args[2], args[3], args[4:]
    controls: list[int] = []
    readies: dict[int, int] = {}
    for rank in range(count):
        job_r, job_w = os.pipe()
        ready_r, ready_w = os.pipe()
        argv = [sys.executable, "-c", source, str(job_r), str(ready_w), torch, *preloads]
        node.start(argv, dict(os.environ), fds=(job_r, ready_w))
        os.close(job_r)
        os.close(ready_w)
        controls.append(job_w)
        readies[ready_r] = rank
        node.selector.register(ready_r, selectors.EVENT_READ, ready_r)
    said = _all_ready(node, readies)
    os.write(ready, said[0])
    os.close(ready)
    job = _job(node, control)
    if job is None:
        for fd in controls:
            os.close(fd)  # each standby exits, jobless
        node.run()
        return
    argv = job["argv"][job["argv"].index("--") + 1 :]
    os.environ.clear()
    os.environ.update(job["env"])
    for rank, fd in enumerate(controls):
        env = rank_environ(job["env"], rank)
        message = memoryview(marshal.dumps({"argv": argv, "env": env, "cwd": job["cwd"]}, 4))
        try:
            while message:
                message = message[os.write(fd, message) :]
        except BrokenPipeError:  # it ended just now: the node never runs half its ranks
            print(f"sandbox-runner: rank {rank} ended before its job came", file=sys.stderr)
            node.abandon()
        os.close(fd)
    node.run()


def _all_ready(node: Node, readies: dict[int, int]) -> dict[int, bytes]:
    """What each standby said once warm (`r` and its imports), by rank; or the node's end."""
    said: dict[int, bytes] = {}
    while len(said) < len(readies):
        for fd in node.step(None):
            said[readies[fd]] = os.read(fd, 1 << 16)
            node.selector.unregister(fd)
            os.close(fd)
            if not said[readies[fd]].startswith(b"r"):
                node.abandon()
        if node.any_ended():
            node.abandon()
    return said


def _job(node: Node, control: int) -> dict[str, Any] | None:
    """The node's job as the runner hands it over; None: it let the standby go."""
    node.selector.register(control, selectors.EVENT_READ, control)
    data = b""
    while True:
        if control in node.step(None):
            chunk = os.read(control, 1 << 16)
            if not chunk:
                break
            data += chunk
        elif node.any_ended():
            node.abandon()
    node.selector.unregister(control)
    os.close(control)
    return marshal.loads(data) if data else None


def main() -> None:
    grace, count, mode, rest = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    node = Node(grace)
    if mode == "cold":
        cold(node, count, rest[1:])  # after "--"
    else:
        warm(node, count, rest)


if __name__ == "__main__":
    main()
