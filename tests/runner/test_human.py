"""The runner's records as lines for people (`runner.human`)."""

from __future__ import annotations

import re

from runner.human import line
from runner.units import format_duration

KEY = "cc3c9e9ba7b58466284d603d11fb2eb6ea4138610e5774904538e67a27cd2eb9"


def said(event: str, level: str = "info", **fields: object) -> str | None:
    return line({"timestamp": "2026-12-05T22:00:00Z", "level": level, "event": event, **fields})


def test_each_event_of_a_job_reads_as_uv_would_say_it() -> None:
    assert said("env.resolved", packages=11, seconds=4.43) == "Resolved 11 packages in 4.4s"
    assert said("env.resolved", packages=1, seconds=0.134) == "Resolved 1 package in 134ms"
    built = said("env.build", env=KEY, packages=11, seconds=70.2, size_bytes=893 * 2**20)
    assert built == "Installed 11 packages in 1m 10s (env cc3c9e9ba7b5, 893.0 MiB)"
    assert said("env.build", env=KEY, packages=0, seconds=1.2, size_bytes=0) == (
        "Created an empty env in 1.2s (env cc3c9e9ba7b5)"
    )
    assert said("env.hit", env=KEY, spec=KEY, waited=False, seconds=0.001) == (
        "Using env cc3c9e9ba7b5"
    )
    assert said("job.start", job="j", step="node-0", argv=["bwrap"], pid=3) == "Started job j"
    assert said("job.start", job="j", step="node-0", warm=True) == "Started job j (warm)"
    assert said("job.start", job="j", step="node-1", argv=["bwrap"]) == "Started node-1"
    uuids = ["GPU-5b6c1f0e-1111-2222-3333-444455556666", "GPU-77aa0e2d-1111-2222-3333-44445555"]
    assert said("job.devices", job="j", gpu=uuids, gpu_index=["1", "3"]) == "Using GPUs 1, 3"
    assert said("job.devices", job="j", cpu=["0"]) == "Using CPU core 0"
    queued = said("job.queued", wants={"gpu": 1}, free={"gpu": 0}, held_by=["a"], ahead=0)
    assert queued == "Waiting for 1 GPU: held by a"
    assert said("job.cancel", "warning", job="j", by="interrupt") == (
        "warning: Cancelling job j (interrupted)"
    )
    busy = said("env.gc.downloads_busy", cause="uv is using its cache; cleaned later")
    assert busy == "kept for now: uv is using its cache; cleaned later"
    for quiet in ("env.resolve", "job.end", "job.exit", "sandbox.limits", "env.gc.in_use"):
        assert said(quiet, job="j", code=0) is None  # the summary, or -v, says these


def test_an_unknown_or_odd_event_is_one_short_line_not_a_crash() -> None:
    text = said("standby.failed", "warning", env=KEY, items=[1, 2, 3, 4], error="gone")
    assert text == "warning: standby.failed env=cc3c9e9ba7b5 items=4 items error=gone"
    odd = said("env.resolved", packages="many")  # a record of another shape
    assert odd is not None and not re.search(r"[0-9a-f]{13,}", odd)


def test_durations_are_rounded_for_reading() -> None:
    assert [format_duration(s) for s in (0.0123, 6.06, 65, 3725)] == [
        "12ms",
        "6.1s",
        "1m 05s",
        "1h 02m",
    ]
