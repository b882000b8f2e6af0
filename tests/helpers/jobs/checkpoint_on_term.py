"""Training code's habit: on SIGTERM, save a checkpoint (slowly), then exit."""

import signal
import sys
import time


def save_and_exit(_signum: int, _frame: object) -> None:
    time.sleep(1.5)  # writing a checkpoint takes a while
    with open("checkpoint.txt", "w") as fh:  # noqa: PTH123 - a job's plain code
        fh.write("saved")
    sys.exit(0)


signal.signal(signal.SIGTERM, save_and_exit)
print("ready", flush=True)
time.sleep(600)
