"""Print `ready`, then sleep: a job for killing things under."""

import time

print("ready", flush=True)
time.sleep(600)
