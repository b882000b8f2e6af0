"""The resolved lock: exact pins that uv chose, in PEP 751 `pylock.toml` form.

Two specs that resolve to the same lock on the same interpreter share one
environment, so the lock's identity is computed from its parsed packages,
never from its bytes (uv's header and spacing are not part of the meaning).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from envs.errors import EnvError
from envs.spec import Interpreter, digest


@dataclass(frozen=True)
class Lock:
    """A parsed `pylock.toml`."""

    text: str

    @cached_property
    def data(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise EnvError(f"invalid pylock.toml: {exc}") from None

    @property
    def packages(self) -> list[dict[str, Any]]:
        packages: list[dict[str, Any]] = self.data.get("packages", [])
        return packages

    def pins(self) -> list[str]:
        """`name==version` for each locked package, sorted: what a human wants to read."""
        return sorted(f"{p['name']}=={p.get('version', '?')}" for p in self.packages)

    def env_key(self, interpreter: Interpreter) -> str:
        """The environment's identity: the locked packages on this interpreter."""
        packages = sorted(self.packages, key=lambda p: (p["name"], p.get("version", "")))
        return digest({"packages": packages, "interpreter": interpreter.identity()})
