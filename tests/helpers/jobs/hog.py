"""Allocate and touch MB mebibytes, a mebibyte at a time; print progress."""

import sys

held = []
for mb in range(int(sys.argv[1])):
    held.append(bytearray(b"x" * (1 << 20)))
    if mb % 100 == 0:
        print(f"holding {mb} MiB", flush=True)
print("done")
