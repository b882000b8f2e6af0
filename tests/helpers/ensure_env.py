"""Run EnvCache.ensure in a separate process: `ensure_env.py CACHE UV FIND_LINKS GO_FILE REQ...`.

Waits until GO_FILE exists (so several processes start together), then prints the env key.
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
    cache_dir, uv, find_links, go, *reqs = sys.argv[1:]
    while not Path(go).exists():
        time.sleep(0.01)
    cache = EnvCache(Path(cache_dir), uv_binary=uv)
    spec = EnvSpec(tuple(parse_all(reqs)), IndexConfig(find_links=(find_links,), no_index=True))
    env = cache.ensure(spec)
    print(env.key, flush=True)


if __name__ == "__main__":
    main()
