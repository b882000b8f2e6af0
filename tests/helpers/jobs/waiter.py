"""Print `ready`, then wait until a `release` file appears in the working folder; exit 0."""

import time
from pathlib import Path

print("ready", flush=True)
deadline = time.monotonic() + 600
while not Path("release").exists() and time.monotonic() < deadline:
    time.sleep(0.1)
print("released" if Path("release").exists() else "never released", flush=True)
