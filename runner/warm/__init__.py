"""Warm starts: standbys, interpreters of an env already in the sandbox of its next job, with
torch (and what the user names) imported and warmed; the next job like the last one takes
one, and its first line comes in milliseconds instead of seconds.

- `program.py`: what runs in a standby (builtins only), up to becoming its job;
- `standby.py`: one standby, the keys that say which job may take it, the hand-over;
- `pool.py`: the standbys a resident process keeps, replaced, bounded and dropped;
- `imports.py`: which of an env's own modules import slowly, measured once per env;
- `priority.py`: a standby's idle IO priority, and the job's given back at hand-over;
- `served.py`: the standbys of `runner train`, held by the resident runner.
"""
