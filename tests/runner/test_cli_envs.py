"""`runner envs ...` as a user types it: a real process, real uv, an offline wheelhouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runner.conftest import RunCli, cli_runner


@pytest.fixture
def run(cli_environ: dict[str, str], tmp_path: Path) -> RunCli:
    return cli_runner(cli_environ, tmp_path, "--log-format", "json")


def test_create_list_show_rm(run) -> None:
    created = json.loads(run("envs", "create", "--with", "Tiny_Pkg", "--json").stdout)
    key = created["key"]
    rows = json.loads(run("envs", "list", "--json").stdout)
    assert [r["key"] for r in rows] == [key]
    for field in ("key", "path", "requirements", "size_bytes", "created", "last_used"):
        assert field in rows[0]
    assert rows[0]["requirements"] == ["tiny-pkg"]

    shown = json.loads(run("envs", "show", key[:8], "--json").stdout)
    assert shown["key"] == key and "tiny-pkg" in shown["lock"]
    assert "dep-a==2.0" in run("envs", "show", key[:8]).stdout

    second = run("envs", "create", "--with", "tiny.pkg")
    assert '"event": "env.hit"' in second.stderr

    assert "removed" in run("envs", "rm", key[:12]).stdout
    assert json.loads(run("envs", "list", "--json").stdout) == []


def test_gc_and_its_arguments(run) -> None:
    run("envs", "create", "--with", "tiny-pkg")
    result = json.loads(run("envs", "gc", "--max-size", "0", "--json").stdout)
    assert len(result["removed"]) == 1
    bad = run("envs", "gc", "--max-size", "lots", check=False)
    assert bad.returncode == 2 and "invalid size 'lots'" in bad.stderr
    none = run("envs", "gc", check=False)
    assert none.returncode == 2 and "--max-size" in none.stderr


def test_user_errors_have_no_traceback(run) -> None:
    missing = run("envs", "show", "deadbeef", check=False)
    assert missing.returncode == 1
    assert "no cached environment with key 'deadbeef'" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad = run("envs", "create", "--with", "torch==", check=False)
    assert bad.returncode == 1 and "'torch=='" in bad.stderr and "Traceback" not in bad.stderr

    failed = run("envs", "create", "--with", "no-such-pkg", check=False)
    assert failed.returncode == 1 and "no-such-pkg" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert json.loads(run("envs", "list", "--json").stdout) == []


def test_log_format_is_global_before_or_after_the_subcommand(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    """As uv's global options: `runner --log-format X envs create` and `runner envs create
    --log-format X` alike."""
    plain = cli_runner(cli_environ, tmp_path)
    after = plain("envs", "create", "--with", "tiny-pkg", "--log-format", "json")
    assert '"event": "env.build"' in after.stderr
    again = plain("envs", "create", "--with", "tiny-pkg", "--log-format", "text")
    assert "Using env " in again.stderr and '"event"' not in again.stderr
    by_default = plain("envs", "create", "--with", "tiny-pkg")  # piped: text all the same
    assert by_default.stderr == again.stderr
    before = plain("--log-format", "json", "envs", "create", "--with", "tiny-pkg")
    assert '"event": "env.hit"' in before.stderr
    assert plain("jobs", "--log-format", "json").returncode == 0
    told = cli_runner({**cli_environ, "RUNNER_LOG_FORMAT": "json"}, tmp_path)
    assert '"event": "env.hit"' in told("envs", "create", "--with", "tiny-pkg").stderr
