"""Human sizes and durations, as typed on a command line (`10G`, `500MiB`, `7d`, `90m`)."""

from __future__ import annotations

import re
from datetime import timedelta

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(ib?|b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str) -> int:
    """Bytes from `123`, `500M`, `1.5GiB`, `10GB`, Kubernetes' `4Gi` (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with K, M, G or T, such as 10G")
    return int(float(match[1]) * 1024 ** _POWERS[match[2].lower()])


def parse_duration(text: str) -> timedelta:
    """A timedelta from `30s`, `90m`, `12h`, `7d`, `2w`."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"invalid duration {text!r}: use a number with s, m, h, d or w, such as 7d"
        )
    return timedelta(seconds=float(match[1]) * _SECONDS[match[2].lower()])


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_duration(seconds: float) -> str:
    """A duration rounded for reading, as uv writes it: `12ms`, `6.1s`, `2m 05s`, `1h 02m`."""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"
