"""Conda environments for real: a local channel, locks written by rattler and conda-lock,
installs by rattler into the cache, PyPI packages by uv into the same prefix."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import conda_lock.lockfile  # noqa: F401  (imported once, here: it sets CONDA_ROOT)
import pytest

from envs import EnvCache, EnvSpec, IndexConfig, Interpreter, formats
from envs.errors import BuildError
from envs.lockfile import LockError
from envs.spec import Connection
from tests.condachannel import (
    DATA_TEXT,
    Channel,
    ChannelHandler,
    conda_package,
    make_channel,
    serve,
    write_conda_lock,
    write_pixi_lock,
)
from tests.conftest import UvSpy
from tests.wheelhouse import make_wheel

HERE = Interpreter.current()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def channel(tmp_path: Path) -> Channel:
    return make_channel(tmp_path)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    body = "def main():\n    print('tiny-cli ran')\n"
    return make_wheel(
        tmp_path / "wheels", "tiny-pkg", "1.0", scripts={"tiny-cli": "tiny_pkg:main"}, body=body
    )


@pytest.fixture
def pixi_lock(tmp_path: Path, channel: Channel, wheel: Path) -> Path:
    records = channel.solve(["tiny-mod"])
    return write_pixi_lock(tmp_path / "pixi.lock", {"default": records}, channel, pypi=[wheel])


def spec(**connection: object) -> EnvSpec:
    index = IndexConfig(no_index=True, connection=Connection(**connection))  # type: ignore[arg-type]
    return EnvSpec(requirements=(), index=index)


def run(env_python: Path, code: str) -> str:
    proc = subprocess.run([env_python, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_pixi_lock_is_a_conda_prefix_whose_python_imports_conda_and_pypi_packages(
    cache: EnvCache, pixi_lock: Path, uv_spy: UvSpy, channel: Channel
) -> None:
    lock = formats.read(pixi_lock, HERE)
    assert lock.kind == "conda"
    assert lock.pins() == [
        "_tiny_mutex==1.1.1w",
        f"python=={channel.python_version}",
        "tiny-data==1.0",
        "tiny-mod==1.0",
        "tiny-pkg==1.0",
    ]
    env = cache.ensure(spec(), lock=lock)
    # the noarch: python package, reading the file of the package it depends on
    assert run(env.python, "import tiny_mod; print(tiny_mod.VALUE, tiny_mod.DATA)") == (
        f"42 {DATA_TEXT.strip()}"
    )
    assert run(env.python, "import sys, tiny_pkg; print(sys.prefix)") == str(env.path)
    # the PyPI package's entry point names the published prefix, not the build folder
    script = subprocess.run(
        [env.path / "bin" / "tiny-cli"], capture_output=True, text=True, check=False
    )
    assert script.stdout == "tiny-cli ran\n", script.stderr
    assert env.meta.conda == {
        "source": "pixi.lock",
        "platform": "linux-64",
        "environment": "default",
        "channels": [lock.conda.channels[0]],
        "packages": {"conda": 4, "pypi": 1},
    }
    # conda's files are hardlinks of rattler's package cache, under the cache root
    data = env.path / "share" / "tiny" / "data.txt"
    (cached,) = cache.conda_dir.glob("tiny-data-1.0-0/share/tiny/data.txt")
    assert data.stat().st_ino == cached.stat().st_ino
    # the PyPI part only went to uv, and uv installed into the prefix without syncing
    assert [c.split()[:2] for c in uv_spy.calls()] == [["pip", "install"]]


def test_the_same_lock_is_one_env_and_a_changed_pin_is_another(
    cache: EnvCache, tmp_path: Path, channel: Channel, pixi_lock: Path, uv_spy: UvSpy
) -> None:
    first = cache.ensure(spec(), lock=formats.read(pixi_lock, HERE))
    again = formats.read(pixi_lock, HERE)
    assert cache.ensure(spec(), lock=again).key == first.key
    assert len(uv_spy.calls()) == 1, "the second ensure built nothing"
    conda_package(channel.path, "tiny-data", "1.1", {"share/tiny/data.txt": b"newer\n"})
    channel.reindex()
    newer = write_pixi_lock(
        tmp_path / "newer.lock", {"default": channel.solve(["tiny-mod"])}, channel
    )
    changed = cache.ensure(spec(), lock=formats.read(newer, HERE))
    assert changed.key != first.key
    assert run(changed.python, "import tiny_mod; print(tiny_mod.DATA)") == "newer"


def test_gc_takes_from_rattlers_cache_what_no_env_holds_and_never_under_an_install(
    cache: EnvCache, tmp_path: Path, channel: Channel, pixi_lock: Path
) -> None:
    from envs import condacache
    from envs.gc import collect

    first = cache.ensure(spec(), lock=formats.read(pixi_lock, HERE))
    conda_package(channel.path, "tiny-data", "1.1", {"share/tiny/data.txt": b"newer\n"})
    channel.reindex()
    newer = write_pixi_lock(
        tmp_path / "newer.lock", {"default": channel.solve(["tiny-mod"])}, channel
    )
    second = cache.ensure(spec(), lock=formats.read(newer, HERE))
    cache.remove(first.key)  # tiny-data 1.0 was its alone; the rest the two shared

    def extracted() -> set[str]:
        return {p.name for p in condacache.packages(cache.conda_dir)}

    assert {"tiny-data-1.0-0", "tiny-data-1.1-0", "python-3.11.2-0"} <= extracted()
    left = cache.conda_dir / f"{condacache.PRUNED}tiny-gone-1.0-0"  # a gc killed midway
    (left / "info").mkdir(parents=True)
    with condacache.installing(cache.conda_dir):  # a build links from the cache now
        busy = collect(cache, max_size=1 << 40)
    assert busy.conda_cleaned == [] and "tiny-data-1.0-0" in extracted()
    done = collect(cache, max_size=1 << 40)
    assert done.conda_cleaned == ["tiny-data-1.0-0"] and done.freed_bytes > 0
    assert "tiny-data-1.0-0" not in extracted() and "tiny-data-1.1-0" in extracted()
    assert not (cache.conda_dir / "tiny-data-1.0-0.lock").exists() and not left.exists()
    assert not list(cache.conda_dir.glob(f"{condacache.PRUNED}*"))
    assert run(second.python, "import tiny_mod; print(tiny_mod.DATA)") == "newer"
    again = cache.ensure(spec(), lock=formats.read(pixi_lock, HERE))  # fetched once more
    assert run(again.python, "import tiny_mod; print(tiny_mod.DATA)") == DATA_TEXT.strip()


def test_a_local_archive_changed_after_locking_is_refused_and_nothing_is_published(
    cache: EnvCache, channel: Channel, pixi_lock: Path
) -> None:
    lock = formats.read(pixi_lock, HERE)
    archive = channel.archive("tiny-data")
    conda_package(channel.path, "tiny-data", "1.0", {"share/tiny/data.txt": b"tampered\n"})
    with pytest.raises(BuildError, match=r"hash mismatch for the conda package tiny-data 1\.0"):
        cache.ensure(spec(), lock=lock)
    assert archive.exists()
    assert cache.ready() == []
    assert not list(cache.tmp_dir.glob("build-*"))


class Recorder:
    """A logger that keeps what it is told, to read the events of one build."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def _keep(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    info = warning = error = debug = _keep


@pytest.fixture
def served(channel: Channel) -> Iterator[tuple[str, type[ChannelHandler]]]:
    with serve(channel) as found:
        yield found


def test_a_mirror_serves_the_locked_files_under_the_same_key_and_rattler_checks_downloads(
    cache: EnvCache,
    tmp_path: Path,
    channel: Channel,
    pixi_lock: Path,
    served: tuple[str, type[ChannelHandler]],
) -> None:
    url, handler = served
    lock = formats.read(pixi_lock, HERE)
    mirrors = ((channel.url, url),)
    log = Recorder()
    env = cache.ensure(spec(conda_mirrors=mirrors), log=log, lock=lock)  # type: ignore[arg-type]
    # progress as it goes: the last event has every package done and every byte fetched
    (*_, last) = (fields for event, fields in log.events if event == "env.conda.progress")
    sizes = sum(channel.archive(p.name).stat().st_size for p in lock.conda.conda)
    assert last == {"done": 4, "packages": 4, "downloaded_bytes": sizes}
    assert sorted(p.rsplit("/", 1)[-1] for p in handler.requested) == sorted(
        p.file_name for p in lock.conda.conda
    ), "every conda archive came from the mirror"
    assert env.key == lock.env_key(HERE), "where the files come from is not part of the key"
    assert run(env.python, "import tiny_mod; print(tiny_mod.VALUE)") == "42"
    # the mirror serves another file under the locked name: rattler refuses the download
    conda_package(channel.path, "tiny-data", "1.0", {"share/tiny/data.txt": b"tampered\n"})
    other = EnvCache(tmp_path / "other-cache", uv_binary=cache.uv.binary)
    with pytest.raises(BuildError, match="hash mismatch"):
        other.ensure(spec(conda_mirrors=mirrors), lock=lock)
    assert other.ready() == []


def test_a_lock_for_another_platform_or_a_missing_environment_is_refused_naming_it(
    tmp_path: Path, channel: Channel
) -> None:
    records = channel.solve(["tiny-mod"])
    mac = write_pixi_lock(
        tmp_path / "mac" / "pixi.lock", {"default": records}, channel, platform="osx-arm64"
    )
    with pytest.raises(LockError, match=r"locked for osx-arm64 platform.*this machine is linux-64"):
        formats.read(mac, HERE)
    two = write_pixi_lock(
        tmp_path / "two" / "pixi.lock", {"default": records, "cuda": records}, channel
    )
    with pytest.raises(LockError, match=r"has no environment 'gpu' \(it has: cuda, default\)"):
        formats.read(two, HERE, "gpu")
    assert formats.read(two, HERE, "cuda").conda.environment == "cuda"
    with pytest.raises(LockError, match=r"--environment applies to pixi.lock and conda-lock.yml"):
        formats.read(_pylock(tmp_path), HERE, "cuda")


def _pylock(tmp_path: Path) -> Path:
    path = tmp_path / "pylock.toml"
    path.write_text(
        'lock-version = "1.0"\n[[packages]]\nname = "x"\nversion = "1"\n'
        '[[packages.wheels]]\nurl = "file:///x-1-py3-none-any.whl"\n'
        'hashes = {sha256 = "' + "0" * 64 + '"}\n'
    )
    return path


def test_a_conda_lock_without_python_or_with_an_unreadable_file_is_one_clear_line(
    tmp_path: Path, channel: Channel
) -> None:
    data_only = write_pixi_lock(
        tmp_path / "pixi.lock", {"default": channel.solve(["tiny-data"])}, channel
    )
    with pytest.raises(LockError, match="holds conda packages but no conda `python`"):
        formats.read(data_only, HERE)
    broken = tmp_path / "broken" / "pixi.lock"
    broken.parent.mkdir()
    broken.write_text("version: 6\nenvironments: [\n")
    with pytest.raises(LockError, match=r"invalid pixi.lock") as caught:
        formats.read(broken, HERE)
    assert "\n" not in str(caught.value)


def test_a_mixed_conda_lock_yml_installs_conda_and_pip_packages(
    cache: EnvCache, tmp_path: Path, channel: Channel, wheel: Path
) -> None:
    path = write_conda_lock(
        tmp_path / "conda-lock.yml", channel.solve(["tiny-mod"]), channel, pypi=[wheel]
    )
    lock = formats.read(path, HERE)
    assert lock.kind == "conda" and lock.conda.counts() == {"conda": 4, "pypi": 1}
    env = cache.ensure(spec(), lock=lock)
    assert (
        run(env.python, "import tiny_mod, tiny_pkg; print(tiny_mod.VALUE, tiny_pkg.__version__)")
        == "42 1.0"
    )
    # a pip-only conda-lock.yml is what it always was: a pip lock on the runner's Python
    with pytest.raises(LockError, match="writes pip-only locks"):
        formats.write(lock, "conda-lock", HERE)


def test_a_pypi_hash_mismatch_in_a_conda_lock_is_refused_by_uv(
    cache: EnvCache, tmp_path: Path, channel: Channel, wheel: Path
) -> None:
    path = write_pixi_lock(
        tmp_path / "pixi.lock", {"default": channel.solve(["tiny-mod"])}, channel, pypi=[wheel]
    )
    lock = formats.read(path, HERE)
    make_wheel(wheel.parent, "tiny-pkg", "1.0", body="CHANGED = True\n")
    with pytest.raises(BuildError, match=r"(?i)hash"):
        cache.ensure(spec(), lock=lock)
    assert cache.ready() == []


_BUILD = """
import sys
from pathlib import Path
from envs import EnvCache, EnvSpec, IndexConfig, Interpreter, formats
from envs.spec import Connection
cache = EnvCache(Path(sys.argv[1]), uv_binary=sys.argv[2])
lock = formats.read(Path(sys.argv[3]), Interpreter.current())
mirrors = ((sys.argv[4], sys.argv[5]),)
index = IndexConfig(no_index=True, connection=Connection(conda_mirrors=mirrors))
cache.ensure(EnvSpec(requirements=(), index=index), lock=lock)
"""


@pytest.mark.parametrize("stage", ["rattler download", "uv install"])
def test_a_build_killed_during_install_leaves_nothing_usable(
    cache: EnvCache,
    uv_spy: UvSpy,
    channel: Channel,
    pixi_lock: Path,
    served: tuple[str, type[ChannelHandler]],
    stage: str,
) -> None:
    url, handler = served
    if stage == "rattler download":
        handler.stall = threading.Event()  # tiny-data's download hangs until set
        started = lambda: any("tiny-data" in p for p in handler.requested)  # noqa: E731
    else:
        uv_spy.hang_after("pip install")
        started = lambda: bool(uv_spy.calls("pip install"))  # noqa: E731
    argv = [str(cache.root), str(uv_spy.path), str(pixi_lock), channel.url, url]
    proc = subprocess.Popen(
        [sys.executable, "-c", _BUILD, *argv],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not started() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started(), "the build never reached the stage"
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert cache.ready() == []
    assert list(cache.tmp_dir.glob("build-*")), "the dead build left its folder (unpublished)"

    if handler.stall is not None:
        handler.stall.set()
    uv_spy.hang_after(None)
    lock = formats.read(pixi_lock, HERE)
    env = cache.ensure(spec(conda_mirrors=((channel.url, url),)), lock=lock)
    assert run(env.python, "import tiny_mod, tiny_pkg; print(tiny_mod.DATA)") == DATA_TEXT.strip()
    assert not list(cache.tmp_dir.glob("build-*")), "the next build cleared what the dead one left"


def test_a_conda_env_is_leased_and_collected_like_any_env(cache: EnvCache, pixi_lock: Path) -> None:
    from envs.gc import collect

    lock = formats.read(pixi_lock, HERE)
    with cache.lease(spec(), lock=lock) as env:
        held = collect(cache, max_size=0)
        assert held.in_use == [env.key] and held.removed == []
        assert run(env.python, "import tiny_mod; print(tiny_mod.VALUE)") == "42"
    done = collect(cache, max_size=0)
    assert done.removed == [env.key] and not env.path.exists()
    # what rattler extracted for it goes too; the next build fetches it again
    assert "tiny-mod-1.0-0" in done.conda_cleaned and not list(cache.conda_dir.glob("tiny-mod*"))
    again = cache.ensure(spec(), lock=lock)
    assert run(again.python, "import tiny_mod; print(tiny_mod.DATA)") == DATA_TEXT.strip()


def test_a_conda_env_builds_from_code_already_inside_an_event_loop(
    cache: EnvCache, pixi_lock: Path
) -> None:
    """A notebook runs an event loop: rattler's coroutine then runs in a thread of its own."""
    import asyncio

    async def build() -> Path:
        return cache.ensure(spec(), lock=formats.read(pixi_lock, HERE)).python

    assert run(asyncio.run(build()), "import tiny_mod; print(tiny_mod.VALUE)") == "42"


PIXI_V6 = """\
version: 6
environments:
  default:
    channels:
    - url: {channel}/
    indexes:
    - https://pypi.org/simple
    packages:
      linux-64:
{default}
  dev:
    channels:
    - url: {channel}/
    packages:
      linux-64:
{dev}
packages:
{packages}
"""


def _v6_entry(archive: Path, depends: list[str], noarch: str | None) -> str:
    data = archive.read_bytes()
    lines = [
        f"- conda: {archive.as_uri()}",
        f"  subdir: {archive.parent.name}",
        f"  sha256: {hashlib.sha256(data).hexdigest()}",
        f"  md5: {hashlib.md5(data).hexdigest()}",
        *(["  depends:"] + [f"  - {d}" for d in depends] if depends else []),
        *([f"  noarch: {noarch}"] if noarch else []),
        "  license: MIT",
        f"  size: {len(data)}",
        "  timestamp: 1700000000000",
    ]
    return "\n".join(lines)


def test_a_pixi_lock_as_pixi_writes_it_v6_runs_and_an_editable_source_is_refused(
    cache: EnvCache, tmp_path: Path, channel: Channel, wheel: Path
) -> None:
    """pixi writes version 6 (names and versions only in the URLs, `indexes`, a project's
    own package as an editable `pypi: ./`): the text here is pixi's shape, every hash
    computed from the files."""
    conda = {
        "_tiny_mutex": ([], None),
        "python": (["_tiny_mutex"], None),
        "tiny-data": ([], "generic"),
        "tiny-mod": (["python", "tiny-data >=1"], "python"),
    }
    archives = {name: channel.archive(name) for name in conda}
    listed = [f"      - conda: {a.as_uri()}" for a in archives.values()]
    pypi = (
        f"- pypi: {wheel.as_uri()}\n  name: tiny-pkg\n  version: '1.0'\n"
        f"  sha256: {hashlib.sha256(wheel.read_bytes()).hexdigest()}\n"
        "  requires_python: '>=3.8'"
    )
    own = "- pypi: ./\n  name: my-project\n  version: 0.1.0\n  editable: true"
    text = PIXI_V6.format(
        channel=channel.url,
        default="\n".join([*listed, f"      - pypi: {wheel.as_uri()}"]),
        dev="\n".join([*listed, "      - pypi: ./"]),
        packages="\n".join([*(_v6_entry(archives[n], *conda[n]) for n in conda), pypi, own]),
    )
    path = tmp_path / "ws" / "pixi.lock"
    path.parent.mkdir()
    path.write_text(text)
    lock = formats.read(path, HERE)
    assert lock.conda.counts() == {"conda": 4, "pypi": 1}
    env = cache.ensure(spec(), lock=lock)
    assert run(env.python, "import tiny_mod, tiny_pkg; print(tiny_mod.VALUE)") == "42"
    with pytest.raises(LockError, match=r"my-project \(.*\) has no sha256 hash"):
        formats.read(path, HERE, "dev")


def test_what_rattler_made_of_a_pixi_lock_is_kept_by_its_content_for_the_next_job(
    tmp_path: Path, channel: Channel, pixi_lock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from envs import conda

    read_pixi, reads = conda.read_pixi, []

    def counted(*args: object) -> conda.CondaSet:
        reads.append(args)
        return read_pixi(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(conda, "read_pixi", counted)
    memo = tmp_path / "memo"
    first = formats.read(pixi_lock, HERE, None, memo)
    assert formats.read(pixi_lock, HERE, None, memo) == first and len(reads) == 1
    assert formats.read(pixi_lock, HERE) == first and len(reads) == 2  # no memo: read

    pixi_lock.write_text(pixi_lock.read_text() + "\n")  # another content: read again
    formats.read(pixi_lock, HERE, None, memo)
    assert len(reads) == 3 and len(list(memo.iterdir())) == 2
    for kept in memo.iterdir():  # a damaged one is not trusted: read again
        kept.write_text('{"kind": "conda", "text": "{')
    assert formats.read(pixi_lock, HERE, None, memo) == first and len(reads) == 4
    assert formats.read(pixi_lock, HERE, None, memo) == first and len(reads) == 4  # mended

    month_ago = time.time() - (formats.MEMO_DAYS + 1) * 86400
    kept = sorted(memo.iterdir(), key=lambda p: p.stat().st_mtime)
    os.utime(kept[0], (month_ago, month_ago))
    formats.prune_memo(memo)
    assert list(memo.iterdir()) == kept[1:]  # unread for a month: gone


def test_a_channel_that_cannot_be_reached_names_the_mirror_setting(
    cache: EnvCache, channel: Channel, pixi_lock: Path
) -> None:
    """rattler's error chain for a host that does not resolve, and what to do about it."""
    mirrors = ((channel.url, "https://conda.invalid/tiny"),)
    with pytest.raises(BuildError) as failed:
        cache.ensure(spec(conda_mirrors=mirrors), lock=formats.read(pixi_lock, HERE))
    said = str(failed.value)
    assert said.startswith("installing the conda packages failed: ")
    assert "point RUNNER_CONDA_MIRRORS at a mirror of it" in said
    assert f"(mirrors now: {channel.url}=https://conda.invalid/tiny)" in said
    assert cache.ready() == []
