"""pip's configuration as pip reads it: checked against `pip config list` itself, on files
made in each test (a temporary HOME and XDG folders; never the user's own)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from envs import IndexConfig
from envs.pipconfig import PipConfigError, entries, mask, read
from envs.spec import Connection


def conf(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """A user whose pip files all lie under tmp_path: site-wide, legacy and new per-user."""
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    conf(xdg / "pip" / "pip.conf", "[global]\nindex-url = file:///site/simple\ntimeout = 5\n")
    conf(home / ".pip" / "pip.conf", "[global]\nfind-links = /legacy\nretries = 1\n")
    conf(
        home / ".config" / "pip" / "pip.conf",
        "[global]\nfind_links = /new /newer\n--trusted-host = a.example\n"
        "[install]\nindex-url = file:///user-install/simple\n"
        "[freeze]\nexclude = nothing\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "XDG_"))}
    return {**env, "HOME": str(home), "XDG_CONFIG_DIRS": str(xdg), "PIP_RETRIES": "3"}


def pip_config_list(environ: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        found[key] = ast.literal_eval(value)
    return found


def ours(environ: dict[str, str]) -> dict[str, str]:
    return {k: s.value for k, s in entries(environ).items()}


def test_the_files_and_variables_are_read_as_pip_config_list_reads_them(
    environ: dict[str, str], tmp_path: Path
) -> None:
    expected = {k: v for k, v in pip_config_list(environ).items() if not k.startswith("freeze.")}
    assert ours(environ) == expected
    assert expected["global.find-links"] == "/new /newer"  # the new user file over the legacy

    # PIP_CONFIG_FILE: read last, and the per-user files are then skipped
    env_file = conf(tmp_path / "env.conf", "[global]\nextra-index-url = file:///x/simple\n")
    with_file = {**environ, "PIP_CONFIG_FILE": str(env_file)}
    expected = {k: v for k, v in pip_config_list(with_file).items() if not k.startswith("freeze.")}
    assert ours(with_file) == expected
    assert "global.find-links" not in expected and "global.extra-index-url" in expected

    # PIP_CONFIG_FILE=os.devnull: no file at all
    off = {**environ, "PIP_CONFIG_FILE": os.devnull}
    assert (
        ours(off) == pip_config_list(off) == {":env:.config-file": os.devnull, ":env:.retries": "3"}
    )


def test_install_wins_over_global_and_variables_over_files_each_with_its_origin(
    environ: dict[str, str], tmp_path: Path
) -> None:
    user_file = tmp_path / "home" / ".config" / "pip" / "pip.conf"
    found = read(environ)
    assert found["index-url"].value == "file:///user-install/simple"  # [install] over [global]
    assert found["index-url"].origin == f"{user_file} [install]"
    assert found["retries"].value == "3" and found["retries"].origin == "PIP_RETRIES"
    assert found["timeout"].origin == f"{tmp_path / 'xdg' / 'pip' / 'pip.conf'} [global]"

    index = IndexConfig.from_pip(
        {**environ, "PIP_NO_INDEX": "", "PIP_DEFAULT_TIMEOUT": "9", "PIP_PRE": "yes"}
    )
    assert index.index_url == "file:///user-install/simple"
    assert index.find_links == ("/new", "/newer")
    connection = replace(index.connection, cert=None)  # /etc/pip.conf is read whatever HOME is
    assert connection == Connection(trusted_hosts=("a.example",), timeout="9", retries="3")
    assert index.origin("find_links") == f"{user_file} [global]"
    assert index.origin("timeout") == "PIP_DEFAULT_TIMEOUT"  # pip's other name for timeout
    assert index.unused == (("pre", "PIP_PRE"),)  # named, not dropped; exclude is [freeze]'s


def test_a_job_option_wins_over_settings_over_pip_and_says_where_each_came_from(
    environ: dict[str, str],
) -> None:
    pip = IndexConfig.from_pip(environ)
    settings = IndexConfig(find_links=("/from-settings",)).labelled("RUNNER_FIND_LINKS")
    job = IndexConfig(index_url="https://job.example/simple").labelled("--index-url")
    merged = IndexConfig.layered(job, settings, pip)
    assert merged.index_url == "https://job.example/simple"
    assert merged.find_links == ("/from-settings",)
    assert merged.connection.trusted_hosts == ("a.example",)
    assert dict(merged.origins)["index_url"] == "--index-url"
    assert dict(merged.origins)["find_links"] == "RUNNER_FIND_LINKS"
    assert "[global]" in dict(merged.origins)["trusted_hosts"]


def test_a_broken_pip_file_is_one_clear_error(environ: dict[str, str], tmp_path: Path) -> None:
    bad = conf(tmp_path / "bad.conf", "index-url = no section\n")
    with pytest.raises(PipConfigError, match=r"pip configuration file .*bad.conf.* is invalid"):
        read({**environ, "PIP_CONFIG_FILE": str(bad)})


def test_constraint_files_are_in_the_key_by_content_and_connection_options_are_not(
    tmp_path: Path,
) -> None:
    caps = conf(tmp_path / "caps.txt", "tiny-pkg<1\n")
    capped = IndexConfig(constraints=(str(caps),))
    key = capped.identity()
    assert key != IndexConfig().identity()
    caps.write_text("tiny-pkg<2\n")
    assert IndexConfig(constraints=(str(caps),)).identity() != key  # a new cap: a new env
    tls = IndexConfig(connection=Connection(cert="/ca.pem", trusted_hosts=("h",), proxy="p"))
    assert tls.identity() == IndexConfig().identity()  # the same files arrive either way
    token = IndexConfig(index_url="https://u:one@mirror.example/simple").identity()
    assert token == IndexConfig(index_url="https://u:two@mirror.example/simple").identity()


def test_credentials_are_masked() -> None:
    assert (
        mask("https://user:s3cret@mirror.example/simple")
        == "https://user:****@mirror.example/simple"
    )
    assert mask("https://tok3n@mirror.example/simple") == "https://****@mirror.example/simple"
    assert mask("file:///opt/wheels") == "file:///opt/wheels"
    shown = IndexConfig(
        index_url="https://user:s3cret@mirror.example/simple",
        extra_index_urls=("https://tok3n@extra.example/simple",),
        connection=Connection(proxy="http://me:pw@proxy.example:3128"),
    ).shown()
    assert "s3cret" not in str(shown) and "tok3n" not in str(shown) and ":pw@" not in str(shown)
