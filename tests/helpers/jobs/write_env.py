"""Write where a job should not: its env's site-packages (given `env`) or its own places."""

import sys
import sysconfig
from pathlib import Path

site = Path(sysconfig.get_paths()["purelib"])
if sys.argv[1] == "env":
    (site / "planted.py").write_text("print('planted')\n")  # must fail in the sandbox
    print("wrote into site-packages")
else:
    Path("in-workdir.txt").write_text("ok\n")
    Path("/tmp/private.txt").write_text("ok\n")
    print(f"tmp holds {sorted(p.name for p in Path('/tmp').iterdir())}")
