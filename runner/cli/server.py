"""`runner server status|stop`: the resident runner that serves the `runner` command."""

from __future__ import annotations

import click

from runner.cli.common import emit, json_option


def _ask(message: dict[str, object]) -> dict[str, object] | None:
    """The server's answer to `message`, or None when none is running."""
    import socket

    from runner.client import receive, send, socket_path

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(socket_path())
            send(sock, message)
            return receive(sock)[0]
        except OSError:
            return None


@click.group()
def server() -> None:
    """The resident runner that answers `runner` commands (RUNNER_SERVER=0: none)."""


@server.command()
@json_option
def status(as_json: bool) -> None:
    """Whether a resident runner is running, and what it has done."""
    from datetime import datetime

    from runner.client import socket_path
    from runner.units import format_duration, format_size

    where = socket_path()
    said = _ask({"ping": True})
    if said is None:
        emit(
            {"running": False, "socket": str(where)},
            as_json,
            f"no resident runner is running (its socket would be {where}); "
            "the next command starts one",
        )
        return
    since = datetime.fromtimestamp(float(str(said["since"]))).isoformat(timespec="seconds")
    text = "\n".join(
        [
            f"pid:       {said['pid']}",
            f"since:     {since}",
            f"served:    {said['served']} command(s), {said['commands_running']} running now",
            f"memory:    {format_size(int(str(said['rss_bytes'])))}, {said['fds']} open files",
            f"idle exit: after {format_duration(float(str(said['idle_exit'])))} without a command",
            f"socket:    {said['socket']}",
            *_standbys(said.get("standbys")),
        ]
    )
    emit({"running": True, **said}, as_json, text)


def _standbys(listed: object) -> list[str]:
    """A line per standby it keeps for `runner train`: its env, ranks, preloads, memory, age."""
    from runner.units import format_duration, format_size

    if not isinstance(listed, list) or not listed:
        return ["standbys:  none (`runner train` leaves one for the next run like it)"]
    lines = [f"standbys:  {len(listed)}"]
    for s in listed:
        state = "ready" if s.get("ready") else "warming"
        preloaded = ", ".join(s.get("preloaded") or []) or "nothing"
        rss, age = format_size(int(s.get("rss") or 0)), format_duration(float(s.get("age") or 0))
        ranks = int(s.get("ranks") or 1)
        what = f"{ranks} ranks, each preloaded" if ranks > 1 else "preloaded"
        lines.append(
            f"  env {str(s.get('env'))[:12]}  {state}  {what} {preloaded}  {rss}  {age} old"
        )
    return lines


@server.command()
def stop() -> None:
    """Stop the resident runner; commands it runs go on, and the next command starts one."""
    said = _ask({"stop": True})
    click.echo("stopped the resident runner" if said else "no resident runner was running")
