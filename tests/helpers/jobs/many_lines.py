"""Print N numbered lines of W characters: `many_lines.py N W`."""

import sys

count, width = int(sys.argv[1]), int(sys.argv[2])
pad = "x" * width
out = sys.stdout
for i in range(count):
    out.write(f"{i:07d} {pad}\n")
