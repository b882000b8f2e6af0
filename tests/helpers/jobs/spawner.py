"""Start N sleeping child processes at once; a process limit makes a start fail."""

import subprocess
import sys

children = [subprocess.Popen(["sleep", "30"]) for _ in range(int(sys.argv[1]))]
print(f"started {len(children)}")
for child in children:
    child.kill()
