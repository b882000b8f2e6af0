"""A job that caches a download in HF_HOME and keeps a file in its HOME, as libraries do.

`downloads.py save|load`: one JSON line of what it sees.
"""

import json
import os
import sys
from pathlib import Path

hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
weights = hf_home / "hub" / "weights.txt"
mine = Path.home() / ".config" / "app" / "state.txt"
if sys.argv[1] == "save":
    for path, text in ((weights, "weights"), (mine, "mine")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
seen = {
    "home": str(Path.home()),
    "hf_home": os.environ.get("HF_HOME"),
    "torch_home": os.environ.get("TORCH_HOME"),
    "weights": weights.read_text() if weights.exists() else None,
    "mine": mine.read_text() if mine.exists() else None,
}
print(json.dumps(seen), flush=True)
