"""Each torchrun worker prints its pid and global rank, ignores SIGTERM, and sleeps."""

import os
import signal
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(f"pids {os.getpid()} rank {os.environ['RANK']}", flush=True)
time.sleep(600)
