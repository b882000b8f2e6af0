"""What importing each of an env's own modules costs, measured once per env.

By default a standby preloads the top-level modules of the job's own packages whose import
takes over `HEAVY_MS`. Which those are is only known once tried: the first standby of an
env imports every one of them and says how long each took (in the order the later ones
import them: a module's time is what it adds to those before it); later standbys of that
env import only the heavy ones. The figures are kept in the state folder
(`<state>/imports/<env>.json`, its user's alone), with the env folder's identity: an env
removed and made again (another inode) is measured again, and a file that is damaged or
cannot be read or written costs a measurement, never a standby.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from envs.files import atomic_write_text
from runner.warm.standby import folder_id

HEAVY_MS = 100
"""An own module whose import took at least this long is preloaded by default."""


def _path(state_dir: Path, env_dir: Path) -> Path:
    return state_dir / "imports" / f"{env_dir.name}.json"


def _identity(env_dir: Path) -> list[int] | None:
    found = folder_id(env_dir)
    return list(found) if found is not None else None


def measured(state_dir: Path, env_dir: Path) -> dict[str, int] | None:
    """Module -> milliseconds its import took in `env_dir` (a module that did not import is
    not there); None: not measured yet, for this env folder."""
    try:
        kept = json.loads(_path(state_dir, env_dir).read_text(encoding="utf-8"))
        if kept["env"] != _identity(env_dir):
            return None
        return {str(name): int(ms) for name, ms in kept["ms"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def heavy(state_dir: Path, env_dir: Path, modules: list[str]) -> tuple[list[str], bool]:
    """Those of `modules` to preload, and whether they are to be measured: all of them where
    the env was not measured yet, else those whose import took at least HEAVY_MS."""
    known = measured(state_dir, env_dir)
    if known is None:
        return modules, True
    return [m for m in modules if known.get(m, 0) >= HEAVY_MS], False


def keep(state_dir: Path, env_dir: Path, ms: dict[str, int]) -> None:
    """Keep what a measuring standby's imports took (best effort)."""
    identity = _identity(env_dir)
    if identity is None:
        return
    path = _path(state_dir, env_dir)
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"env": identity, "ms": ms}))
