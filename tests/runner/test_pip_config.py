"""The user's pip configuration reaches uv, as `pip install` would use it: real files under a
temporary HOME and PIP_CONFIG_FILE, real uv, local indexes and wheels made by the tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envs.lockfile import Lock
from tests.runner.conftest import RunCli, cli_runner
from tests.runner.test_sandbox import output, records


@pytest.fixture
def pip_user(cli_environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The CLI's environment with no RUNNER_* or PIP_* sources: only pip's files say where
    packages come from (and /etc/pip.conf, which pip reads whatever HOME is)."""
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    keep = {
        k: v
        for k, v in cli_environ.items()
        if k not in ("RUNNER_NO_INDEX", "RUNNER_FIND_LINKS") and not k.startswith(("PIP_", "XDG_"))
    }
    return {**keep, "HOME": str(home), "XDG_CONFIG_DIRS": str(tmp_path / "no-site-files")}


def user_file(environ: dict[str, str], text: str) -> Path:
    path = Path(environ["HOME"]) / ".config" / "pip" / "pip.conf"
    path.write_text(text)
    return path


def simple_index(root: Path, wheelhouse: Path, *wheels: str) -> str:
    """A PEP 503 index on disk holding `wheels` from the wheelhouse; its file:// URL."""
    for name in wheels:
        wheel = wheelhouse / name
        project = root / name.split("-")[0].replace("_", "-")
        project.mkdir(parents=True, exist_ok=True)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        (project / "index.html").write_text(f'<a href="{wheel.as_uri()}#sha256={sha}">{name}</a>\n')
    return root.as_uri()


def wheel(name: str, version: str) -> str:
    return f"{name}-{version}-py3-none-any.whl"


def pins(run: RunCli, *args: str) -> list[str]:
    return Lock(run("lock", "--with", "tiny-pkg", *args).stdout).pins()


def script(tmp_path: Path) -> Path:
    path = tmp_path / "job" / "show.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text("import tiny_pkg\nprint(tiny_pkg.__version__)\n")
    return path


def test_find_links_named_only_in_a_pip_file_serves_train_and_lock(
    pip_user: dict[str, str], wheelhouse: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nfind-links = {wheelhouse}\n[install]\nno-index = yes\n")
    run = cli_runner({**pip_user, "PIP_CONFIG_FILE": str(conf), "PIP_PRE": "1"}, tmp_path)
    run("train", "--name", "from-pip-file", "--with", "tiny-pkg", str(script(tmp_path)))
    assert output(records(run, "from-pip-file")) == ["1.0"]
    (unused,) = [r for r in records(run, "from-pip-file") if r["event"] == "pip.option_not_used"]
    assert (unused["level"], unused["option"], unused["origin"]) == ("warning", "pre", "PIP_PRE")
    index = json.loads(run("status", "from-pip-file", "--json").stdout)["index"]
    assert index["find_links"] == [str(wheelhouse)]
    assert index["origins"]["find_links"] == f"{conf} [global]"
    assert index["origins"]["no_index"] == f"{conf} [install]"
    assert pins(run) == ["dep-a==2.0", "tiny-pkg==1.0"]
    shown = run("envs", "show", index_key(run)).stdout
    assert f"find-links       {wheelhouse}  ({conf} [global])" in shown

    # the same user without that file: nothing to find the package in
    bare = cli_runner({**pip_user, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}, tmp_path)
    failed = bare("train", "--with", "tiny-pkg", str(script(tmp_path)), check=False)
    assert failed.returncode != 0 and "tiny-pkg" in failed.stderr


def index_key(run: RunCli) -> str:
    return str(json.loads(run("envs", "list", "--json").stdout)[0]["key"])


def test_the_index_url_of_a_user_file_gives_way_to_pip_index_url_then_to_the_option(
    pip_user: dict[str, str], wheelhouse: Path, tmp_path: Path
) -> None:
    old = simple_index(
        tmp_path / "old", wheelhouse, "tiny_pkg-0.5-py3-none-any.whl", "dep_a-1.0-py3-none-any.whl"
    )
    new = simple_index(
        tmp_path / "new", wheelhouse, "tiny_pkg-1.0-py3-none-any.whl", "dep_a-2.0-py3-none-any.whl"
    )
    conf = user_file(pip_user, f"[global]\nindex-url = {old}\n")
    run = cli_runner(pip_user, tmp_path)
    assert pins(run) == ["dep-a==1.0", "tiny-pkg==0.5"]
    sources = json.loads(run("config", "--json").stdout)["sources"]
    assert sources["index_url"] == old and sources["origins"]["index_url"] == f"{conf} [global]"

    over = cli_runner({**pip_user, "PIP_INDEX_URL": new}, tmp_path)
    assert pins(over) == ["dep-a==2.0", "tiny-pkg==1.0"]
    assert json.loads(over("config", "--json").stdout)["sources"]["origins"]["index_url"] == (
        "PIP_INDEX_URL"
    )
    assert pins(over, "--index-url", old) == ["dep-a==1.0", "tiny-pkg==0.5"]  # the job's own


def test_a_constraint_file_caps_the_version_and_a_new_cap_is_a_new_env(
    pip_user: dict[str, str], wheelhouse: Path, tmp_path: Path
) -> None:
    caps = tmp_path / "caps.txt"
    caps.write_text("tiny-pkg<1\n")
    user_file(pip_user, f"[global]\nfind-links = {wheelhouse}\nno-index = 1\nconstraint = {caps}\n")
    run = cli_runner(pip_user, tmp_path)
    run("envs", "create", "--with", "tiny-pkg")
    caps.write_text("tiny-pkg<2\n")
    run("envs", "create", "--with", "tiny-pkg")
    envs = json.loads(run("envs", "list", "--json").stdout)
    assert sorted(p for e in envs for p in e["packages"] if p.startswith("tiny")) == [
        "tiny-pkg==0.5",
        "tiny-pkg==1.0",
    ]
    assert envs[0]["index"]["origins"]["constraints"].endswith("pip.conf [global]")


def test_trusted_hosts_certificates_proxy_and_timeouts_reach_uv(
    pip_user: dict[str, str], wheelhouse: Path, tmp_path: Path
) -> None:
    seen = tmp_path / "uv-saw"
    spy = tmp_path / "uv-spy"
    spy.write_text(
        "#!/bin/sh\n"
        f'echo "argv: $*" >> "{seen}"\n'
        'env | grep -E "^(SSL_CERT_FILE|SSL_CLIENT_CERT|HTTPS?_PROXY|UV_HTTP_(TIMEOUT|RETRIES))="'
        f' >> "{seen}"\n'
        f'exec "{pip_user["RUNNER_UV"]}" "$@"\n'
    )
    spy.chmod(0o755)
    ca = tmp_path / "ca.pem"
    ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
    client = tmp_path / "client.pem"
    client.write_text("")
    user_file(
        pip_user,
        f"[global]\nfind-links = {wheelhouse}\nno-index = true\n"
        "trusted-host = a.example b.example\n"
        f"cert = {ca}\nclient-cert = {client}\nproxy = http://me:pw@127.0.0.1:9\n"
        "timeout = 7\nretries = 2\n",
    )
    run = cli_runner({**pip_user, "RUNNER_UV": str(spy)}, tmp_path)
    run("envs", "create", "--with", "tiny-pkg")
    saw = seen.read_text()
    compile_call = next(line for line in saw.splitlines() if "pip compile" in line)
    assert "--allow-insecure-host a.example --allow-insecure-host b.example" in compile_call
    for line in (
        f"SSL_CERT_FILE={ca}",
        f"SSL_CLIENT_CERT={client}",
        "HTTPS_PROXY=http://me:pw@127.0.0.1:9",  # uv needs them; no record shows them
        "UV_HTTP_TIMEOUT=7",
        "UV_HTTP_RETRIES=2",
    ):
        assert line in saw.splitlines()
    shown = run("envs", "show", index_key(run)).stdout
    assert "proxy            http://me:****@127.0.0.1:9" in shown and ":pw@" not in shown


def test_credentials_in_an_index_url_are_masked_in_every_output(
    pip_user: dict[str, str], tmp_path: Path
) -> None:
    secret_url = "https://user:s3cret@127.0.0.1:9/simple"
    environ = {**pip_user, "PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0"}
    run = cli_runner({**environ, "PIP_EXTRA_INDEX_URL": "https://tok3n@127.0.0.1:9/x"}, tmp_path)
    failed = run(
        "train", "--name", "masked", "--index-url", secret_url, "--with", "tiny-pkg",
        str(script(tmp_path)), check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    outputs = [
        failed.stdout + failed.stderr,
        run("logs", "masked", "--json").stdout,
        run("status", "masked", "--json").stdout,
        run("jobs", "--json").stdout,
        run("config", "--json").stdout + run("config").stdout,
    ]
    for text in outputs:
        assert "s3cret" not in text and "tok3n" not in text, text
    assert "https://user:****@127.0.0.1:9/simple" in outputs[2]
    assert "https://****@127.0.0.1:9/x" in outputs[4]


def uses_tiny() -> None:
    import tiny_pkg

    print(f"tiny {tiny_pkg.__version__}")


@pytest.mark.torch
def test_the_sdk_backend_takes_its_sources_from_the_pip_file_too(
    torch_cache: Path, tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubeflow.trainer import CustomTrainer

    from runner.backend import LocalProcessBackend, LocalProcessBackendConfig

    links = " ".join([str(wheelhouse), *os.environ.get("PIP_FIND_LINKS", "").split()])
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nfind-links = {links}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    backend = LocalProcessBackend(
        LocalProcessBackendConfig(cache_dir=torch_cache, state_dir=tmp_path / "state")
    )
    job = backend.train(
        runtime="torch-distributed",
        trainer=CustomTrainer(func=uses_tiny, packages_to_install=["tiny-pkg"]),
    )
    backend.wait_for_job_status(
        job, polling_interval=0.2, timeout=600, status={"Complete", "Failed"}
    )
    assert "tiny 1.0" in list(backend.get_job_logs(job)), list(backend.get_job_logs(job))[-15:]
    assert backend.store.load(job).index["origins"]["find_links"] == f"{conf} [global]"


def test_config_shows_every_setting_with_its_value_and_origin(
    cli_environ: dict[str, str], tmp_path: Path
) -> None:
    from runner.settings import RunnerSettings

    run = cli_runner({**cli_environ, "RUNNER_WARM": "0"}, tmp_path)
    rows = json.loads(run("config", "--json").stdout)["settings"]
    assert set(rows) == set(RunnerSettings.model_fields)
    assert rows["warm"] == {"value": False, "origin": "RUNNER_WARM"}
    assert rows["cancel_grace"] == {"value": 1.0, "origin": "RUNNER_CANCEL_GRACE"}
    assert rows["sandbox"] == {"value": "auto", "origin": "default"}
    text = run("config").stdout.splitlines()
    assert "  warm                 False  (RUNNER_WARM)" in text
    assert "  sandbox              auto" in text


def test_several_indexes_resolve_as_pip_does_the_best_match_across_all_of_them(
    pip_user: dict[str, str], wheelhouse: Path, tmp_path: Path
) -> None:
    """The index has tiny-pkg 1.0, the extra index 0.5: pip takes 1.0 for `>=1`; so does
    the runner (uv's `unsafe-best-match`). RUNNER_INDEX_STRATEGY=first-index, uv's own
    default, looks in the extra index first, takes its tiny-pkg only, and fails."""
    first = simple_index(
        tmp_path / "first", wheelhouse, wheel("tiny_pkg", "1.0"), wheel("dep_a", "2.0")
    )
    extra = simple_index(
        tmp_path / "extra", wheelhouse, wheel("tiny_pkg", "0.5"), wheel("dep_a", "1.0")
    )
    user_file(pip_user, f"[global]\nindex-url = {first}\nextra-index-url = {extra}\n")
    reference = subprocess.run(  # pip itself, with the same files
        [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp_path / "dl"),
         "tiny-pkg>=1"],
        env=pip_user, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [wheel("tiny_pkg", "1.0")]
    run = cli_runner(pip_user, tmp_path)
    locked = Lock(run("lock", "--with", "tiny-pkg>=1").stdout).pins()
    assert locked == ["dep-a==2.0", "tiny-pkg==1.0"]
    strict = cli_runner({**pip_user, "RUNNER_INDEX_STRATEGY": "first-index"}, tmp_path)
    failed = strict("lock", "--with", "tiny-pkg>=1", check=False)
    assert failed.returncode != 0 and "tiny-pkg" in failed.stderr
    said = run("config").stdout
    assert "index-strategy" in said
