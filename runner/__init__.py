"""sandbox-runner: run Python training jobs in cached, sandboxed environments."""

from __future__ import annotations

__version__ = "0.1.0"
