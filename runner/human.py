"""The runner's records as a person reads them: a few plain lines, as uv and pixi print.

A record (`env.resolved`, `job.start`, ...) stays what it is in the log file,
the SDK and `--log-format json`; here it becomes one short line, or nothing
when it says what another line already does (the end of a job is the CLI's
summary) or what only a debugging reader wants (argv, limits, identities: `-v`).
No timestamps, no argv, and keys shortened to 12 hex digits, as git and docker
shorten theirs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from runner.units import format_duration, format_size

Record = Mapping[str, Any]

_HEX = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{20,}\b")


def short(key: object) -> str:
    """An env or spec key as people quote it: its first 12 hex digits."""
    return str(key)[:12]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _resolved(r: Record) -> str:
    return f"Resolved {plural(r['packages'], 'package')} in {format_duration(r['seconds'])}"


def _built(r: Record) -> str:
    packages = r.get("packages")
    what = f"Installed {plural(packages, 'package')}" if packages else "Created an empty env"
    size = f", {format_size(r['size_bytes'])}" if r.get("size_bytes") else ""
    return f"{what} in {format_duration(r['seconds'])} (env {short(r['env'])}{size})"


def _hit(r: Record) -> str:
    waited = " (built meanwhile by another job)" if r.get("waited") else ""
    return f"Using env {short(r['env'])}{waited}"


def _started(r: Record) -> str | None:
    step = r.get("step")
    if step not in (None, "node-0"):
        return f"Started {step}"
    how = " (warm)" if r.get("warm") else ""
    return f"Started job {r.get('job', '')}{how}".rstrip()


def _queued(r: Record) -> str:
    wants = ", ".join(f"{plural(int(n), _UNITS.get(k, k))}" for k, n in r["wants"].items())
    holders = r.get("held_by") or []
    held = f": held by {', '.join(holders)}" if holders else ""
    ahead = f"; {plural(r['ahead'], 'job')} ahead" if r.get("ahead") else ""
    return f"Waiting for {wants}{held}{ahead}"


_UNITS = {"gpu": "GPU", "cpu": "CPU core"}


def _devices(r: Record) -> str | None:
    shown = {k: v for k, v in r.items() if k != "gpu_index"}
    if r.get("gpu_index"):
        shown["gpu"] = r["gpu_index"]  # indices, as `runner gpus` shows them, not UUIDs
    held = [
        f"{_UNITS.get(kind, kind)}s {', '.join(map(str, units))}"
        if len(units) != 1
        else f"{_UNITS.get(kind, kind)} {units[0]}"
        for kind, units in shown.items()
        if kind not in _CONTEXT and isinstance(units, list) and units
    ]
    return f"Using {' and '.join(held)}" if held else None


def _cancel(r: Record) -> str:
    by = {"interrupt": "interrupted", "request": "`runner cancel`"}.get(r.get("by", ""), "")
    return f"Cancelling job {r.get('job', '')}" + (f" ({by})" if by else "")


def _degraded(r: Record) -> str:
    layers = ", ".join(r.get("not_enforced") or [])
    fix = f"; {r['fix']}" if r.get("fix") else ""
    return f"sandbox: {layers} not enforced: {r.get('cause', '')}{fix}"


_LINES: dict[str, Callable[[Record], str | None] | None] = {
    "env.resolve": None,  # the progress line says it while it lasts
    "env.resolved": _resolved,
    "env.build.start": None,
    "env.progress": None,
    "env.conda.progress": None,
    "env.build": _built,
    "env.hit": _hit,
    "env.shared": lambda r: f"Using env {short(r['env'])} (built meanwhile by another job)",
    "env.layer": lambda r: f"Layering over env {short(r['base_env'])}",
    "env.conda.installed": lambda r: f"Installed {plural(r['packages'], 'conda package')}",
    "env.remove": None,  # the command that removes says it, with its own words
    "env.damaged": lambda r: f"env {short(r['env'])} is damaged ({r['error']}); {r['action']}",
    "env.failed": None,  # the summary says why, and the CLI prints uv's whole message
    "env.build.failed": None,
    "env.gc.in_use": None,  # gc's summary counts them
    "env.gc.conda_busy": lambda r: f"kept for now: {r['cause']}",
    "env.gc.bytecode_busy": lambda r: f"kept for now: {r['cause']}",
    "env.gc.downloads_busy": lambda r: f"kept for now: {r['cause']}",
    "pip.option_not_used": lambda r: (
        f"pip's option {r['option']} (from {r['origin']}) is not used: {r['cause']}"
    ),
    "sandbox.identity": lambda r: r.get("note"),
    "sandbox.limits": None,
    "sandbox.degraded": _degraded,
    "sandbox.not_shared": lambda r: "; ".join(r.get("notes") or []) or None,
    "job.cold": None,
    "job.start": _started,
    "job.exit": None,  # the summary says how the job ended
    "job.end": None,
    "job.not_started": None,
    "job.error": None,
    "job.queued": _queued,
    "job.devices": _devices,
    "job.cancel": _cancel,
    "job.timeout": lambda r: (
        f"job {r.get('job', '')} ran past its timeout of "
        f"{format_duration(r['timeout'])}; cancelling it"
    ),
    "job.spawn_failed": lambda r: f"the job could not start: {r['error']}",
    "log.restored": lambda r: f"the job's log was {r['cause']}; it is back, whole",
}
"""Each event's line; None: the event is not for people at the default level."""

_CONTEXT = {"timestamp", "level", "event", "job", "step", "rank", "logger"}


def _first(match: re.Match[str]) -> str:
    return match[1]


def _fields(r: Record) -> str:
    """An unknown event's fields, short: keys cut to 12 hex, lists counted."""
    shown = []
    for key, value in r.items():
        if key in _CONTEXT or value is None:
            continue
        text = f"{len(value)} items" if isinstance(value, list | dict) and len(value) > 3 else value
        shown.append(f"{key}={_HEX.sub(_first, str(text))}")
    return " ".join(shown)


def line(record: Record) -> str | None:
    """The line a person reads for `record`, or None where there is none to read."""
    event = str(record.get("event", ""))
    if event in _LINES:
        say = _LINES[event]
        try:
            text = say(record) if say is not None else None
        except (KeyError, TypeError, ValueError, AttributeError):  # an older record's shape
            text = f"{event} {_fields(record)}".strip()
    else:
        text = f"{event} {_fields(record)}".strip()
    if text is None:
        return None
    level = str(record.get("level", "info"))
    return f"{level}: {text}" if level in ("warning", "error", "critical") else text


def paint(text: str, level: str) -> str:
    """`text` with the escapes of its level, as uv colours its lines: the prefix of a
    warning bold yellow, of an error bold red, an informational line dim."""
    if level == "warning":
        return text.replace("warning:", "\x1b[1;33mwarning\x1b[0m\x1b[1m:\x1b[0m", 1)
    if level in ("error", "critical"):
        return text.replace("error:", "\x1b[1;31merror\x1b[0m\x1b[1m:\x1b[0m", 1)
    return f"\x1b[2m{text}\x1b[0m"
