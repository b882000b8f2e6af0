"""A job that misbehaves: it and its child ignore SIGTERM, print their pids, then sleep."""

import os
import signal
import subprocess
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(
    [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
    ]
)
print(f"pids {os.getpid()} {child.pid}", flush=True)
time.sleep(600)
