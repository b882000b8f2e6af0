"""Print what a job sees: its cwd, an env variable, its arguments; exit with a given code."""

import os
import sys
from pathlib import Path

print(f"cwd {Path.cwd()}")
print(f"var {os.environ.get(sys.argv[1], '<unset>')}")
print(f"args {' '.join(sys.argv[2:])}")
print("to stderr", file=sys.stderr)
code = int(os.environ.get("EXIT_CODE", "0"))
sys.exit(code)
