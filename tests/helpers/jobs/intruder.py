"""A hostile job: makes one attempt on something that is not its own and prints what came of it.

`intruder.py ACTION TARGET`, one line out: `refused: <why>` or what it got.
  read PATH      print the first bytes of a file
  list PATH      the names in a folder
  write PATH     create or overwrite a file
  connect PATH   connect to a Unix socket (@NAME: an abstract one)
  kill PID       send SIGTERM to a process
  own -          start a process of its own and end it with SIGTERM (what a job may do)
  escape MARK    leave a process behind, out of the job's tag, with MARK on its command line
  resolve HOST   look a name up
  status PATH    its capabilities and no_new_privs, from /proc/self/status
  namespaces KINDS  the namespaces it is in, as JSON
  open-write PATH   open a file for writing, and close it unwritten (core_pattern: never write)
  mount PATH     mount a tmpfs there (the mount system call itself)
  unshare-user - make a user namespace (the door back to capabilities)
  ptrace PID     attach to a process (`child`: one it started itself)
  whoami -       its uid and gid
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

action, target = sys.argv[1], sys.argv[2]


def attempt() -> str:
    if action == "read":
        return "read: " + Path(target).read_text()[:40].rstrip("\n")
    if action == "list":
        return "list: " + " ".join(sorted(p.name for p in Path(target).iterdir()))
    if action == "write":
        Path(target).write_text("planted by a hostile job\n")
        return "wrote"
    if action == "connect":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect("\0" + target[1:] if target.startswith("@") else target)
            return "connected: " + sock.recv(64).decode()
    if action == "kill":
        os.kill(int(target), signal.SIGTERM)
        return "sent"
    if action == "own":
        child = subprocess.Popen(["sleep", "60"])
        os.kill(child.pid, signal.SIGTERM)
        return f"own: {child.wait()}"
    if action == "escape":
        untagged = {k: v for k, v in os.environ.items() if "TAG" not in k}
        subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep(120)  # {target}"],
            env=untagged,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return "left behind"
    if action == "resolve":
        return "resolved: " + socket.getaddrinfo(target, None)[0][4][0]
    if action == "status":
        lines = Path(target).read_text().splitlines()
        kept = ("CapEff", "CapBnd", "NoNew", "Seccomp:")
        wanted = [line.replace("\t", "") for line in lines if line.startswith(kept)]
        return "status: " + " ".join(wanted)
    if action == "namespaces":
        kinds = {kind: str(Path(f"/proc/self/ns/{kind}").readlink()) for kind in target.split()}
        return "namespaces: " + json.dumps(kinds)
    return machine()


def machine() -> str:
    """The attempts on what is the machine's: the kernel's settings, system calls, root."""
    if action == "open-write":
        os.close(os.open(target, os.O_WRONLY))
        return "opened for writing"
    if action == "whoami":
        return f"whoami: {os.getuid()} {os.getgid()} {os.getgroups()}"
    if action not in ("mount", "unshare-user", "ptrace"):
        raise SystemExit(f"unknown action {action}")
    libc = ctypes.CDLL(None, use_errno=True)
    child = None
    if action == "mount":
        done = libc.mount(b"none", target.encode(), b"tmpfs", 0, None)
    elif action == "unshare-user":
        done = libc.unshare(0x10000000)  # CLONE_NEWUSER
    else:
        if target == "child":
            child = subprocess.Popen(["sleep", "60"])
        pid = child.pid if child else int(target)
        done = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
    if child:
        child.kill()
    if done != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return f"{action}: done"


try:
    print(attempt(), flush=True)
except OSError as exc:
    print(f"refused: {type(exc).__name__}: {exc.strerror or exc}", flush=True)
