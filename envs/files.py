"""Small filesystem primitives the cache (and the job store) build on."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see either the old content or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def tree_size(root: Path) -> int:
    """Bytes under `root`, each inode counted once (hardlinks into uv's cache included)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))  # noqa: PTH118 - hot loop, str paths
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def remove_tree(path: Path) -> None:
    """Remove a directory tree; one that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def site_packages(venv: Path) -> Path:
    """A venv's one site-packages folder."""
    (site,) = venv.glob("lib/python*/site-packages")
    return site


@contextlib.contextmanager
def flocked(path: Path, mode: int = fcntl.LOCK_EX) -> Iterator[bool]:
    """Hold the OS lock on `path` (made if missing) in `mode` while inside; with LOCK_NB,
    yields False at once where another process holds it. Released by the holder's death too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def held(path: Path) -> bool:
    """Whether some process holds the OS lock on `path` (a folder being built); False if gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def make_dirs(path: Path, mode: int) -> None:
    """Make `path` with exactly `mode` whatever the umask (and the folders above it that are
    missing, as `mkdir -p -m` does: those as the umask says); one that exists stays as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=mode)
    except FileExistsError:
        return  # made before, or meanwhile by another runner: its mode is its maker's
    path.chmod(mode)


def dir_problem(path: Path, *, write: bool = True, mode: int | None = None) -> str | None:
    """Why `path` cannot serve as a directory the runner keeps (None: it can), made if missing
    (with `mode`, where given: 0700 for what is one user's alone)."""
    try:
        if mode is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            make_dirs(path, mode)
        if not path.is_dir():
            raise NotADirectoryError(path)
    except (FileExistsError, NotADirectoryError):
        return "it (or a folder above it) is not a directory"
    except OSError as exc:
        return f"it cannot be created ({exc.strerror})"
    if not os.access(path, os.R_OK | os.X_OK):  # another user's, say
        return "it is not readable by this user (Permission denied): another user's?"
    if write:
        try:  # access() knows nothing of read-only mounts: ask the file system itself
            tempfile.TemporaryFile(dir=path).close()
        except OSError as exc:
            return f"it is not writable ({exc.strerror})"
    return None
