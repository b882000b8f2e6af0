from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from runner.settings import RunnerSettings
from tests.runner.conftest import cli_runner


def test_defaults_come_from_platformdirs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNNER_CACHE_DIR", "RUNNER_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = RunnerSettings()
    assert settings.cache_dir.name == "sandbox-runner"
    assert settings.state_dir.name == "sandbox-runner"
    assert settings.log_format == "text"


def test_runner_prefix_and_list_splitting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("RUNNER_FIND_LINKS", f"{tmp_path}/a, {tmp_path}/b")
    monkeypatch.setenv("RUNNER_EXTRA_INDEX_URLS", "https://x/simple https://y/simple")
    settings = RunnerSettings()
    assert settings.cache_dir == tmp_path / "c"
    assert settings.find_links == [f"{tmp_path}/a", f"{tmp_path}/b"]
    assert settings.extra_index_urls == ["https://x/simple", "https://y/simple"]


def test_settings_index_over_pip_variables(tmp_path: Path) -> None:
    settings = RunnerSettings(index_url="https://settings/simple")
    pip = {"PIP_INDEX_URL": "https://pip/simple", "PIP_FIND_LINKS": str(tmp_path)}
    index = settings.index(pip)
    assert index.index_url == "https://settings/simple"
    assert index.find_links == (str(tmp_path),)


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        RunnerSettings()


def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # `RUNNER_NO_INDEX= runner ...` (or `export RUNNER_NO_INDEX=`) means "not set", as in a shell
    monkeypatch.setenv("RUNNER_NO_INDEX", "")
    monkeypatch.setenv("RUNNER_SANDBOX", "")
    settings = RunnerSettings()
    assert settings.no_index is False
    assert settings.sandbox == RunnerSettings.model_fields["sandbox"].default


def test_bad_settings_are_one_line_naming_each_variable(cli_environ: dict[str, str]) -> None:
    environ = {
        **cli_environ,
        "RUNNER_NETWORK": "perhaps",
        "RUNNER_CANCEL_GRACE": "-1",
        "RUNNER_MEMORY_LIMIT": "lots",
    }
    proc = cli_runner(environ, Path.cwd())("jobs", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: invalid setting ")
    for said in (
        "RUNNER_NETWORK='perhaps': Input should be a valid boolean",
        "RUNNER_CANCEL_GRACE='-1': Input should be greater than 0",
        "RUNNER_MEMORY_LIMIT='lots': invalid size 'lots'",
    ):
        assert said in line
    assert "errors.pydantic.dev" not in line
