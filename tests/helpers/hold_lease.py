"""Hold a lease on an env until killed: `hold_lease.py CACHE UV FIND_LINKS REQ...`.

Prints "leased <key>" once the shared lock is held.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from envs import EnvCache, EnvSpec, IndexConfig
from envs.requirements import parse_all
from runner.logs import configure


def main() -> None:
    configure("json")  # records to stderr; stdout carries the answer
    cache_dir, uv, find_links, *reqs = sys.argv[1:]
    cache = EnvCache(Path(cache_dir), uv_binary=uv)
    spec = EnvSpec(tuple(parse_all(reqs)), IndexConfig(find_links=(find_links,), no_index=True))
    with cache.lease(spec) as env:
        print(f"leased {env.key}", flush=True)
        time.sleep(600)


if __name__ == "__main__":
    main()
