"""Print the named environment variables as one JSON object (null where unset)."""

import json
import os
import sys

print(json.dumps({name: os.environ.get(name) for name in sys.argv[1:]}), flush=True)
