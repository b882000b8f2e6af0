"""A hostile job: tries to forge its own record, log and cancel request, and to reach another job.

`forger.py VICTIM`: prints what each attempt came to, as JSON, and the job folders it can see.
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path

jobdir = Path.cwd().parent  # the runner starts a job in JOBDIR/work
jobs = jobdir.parent
victim = jobs / sys.argv[1]


def attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as exc:
        return f"refused: {exc.strerror}"
    return "done"


attempts = {
    "own record": lambda: (jobdir / "job.json").write_text("{}"),
    "own log": lambda: (jobdir / "log.jsonl").open("a").write("forged\n"),
    "own cancel": (jobdir / "cancel").touch,
    "victim record": (victim / "job.json").read_text,
    "victim cancel": (victim / "cancel").touch,
    "work": lambda: Path("in-work.txt").write_text("mine"),
}
print(json.dumps({name: attempt(action) for name, action in attempts.items()}), flush=True)
print("visible " + " ".join(sorted(p.name for p in jobs.iterdir())), flush=True)
