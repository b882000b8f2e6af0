"""Try a TCP connection to 127.0.0.1:PORT; print the outcome and the network interfaces."""

import socket
import sys
from pathlib import Path

interfaces = [
    line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]
]
print(f"interfaces {' '.join(sorted(interfaces))}")
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
except OSError as exc:
    print(f"connect failed: {exc}")
    sys.exit(1)
print("connected")
