"""Jobs on disk: one folder per job with `job.json` (atomic) and `log.jsonl`.

Any process can list jobs, read their logs and cancel them. Every status
change goes through `JobStore.advance`, under the job's lock, along the one
path a job may take (Created -> Running -> Complete | Failed; Created ->
Failed): a final status is never changed again, so an owner that finishes
late cannot overwrite a cancel, and a job cancelled while its env builds
never starts.

Every live job has one owner process, recorded with its pid, start time, pid
namespace and boot. Reading never changes anything: a reader that can tell
the owner is gone sees the job as Failed ("runner exited") without writing;
`reap` is the one explicit step that records it and ends what the owner left
running (idempotent; `runner jobs --reap`, `cancel` and `rm` do it). Where
the owner lived in another pid namespace or boot, a reader cannot tell, and
the stored status stands.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from envs.files import atomic_write_text, dir_problem
from runner import listing
from runner.errors import (
    CorruptRecordError,
    InvalidJobError,
    JobNotFoundError,
    LogMissingError,
    StateDirError,
)
from runner.outcome import Cause
from runner.process import end_tree, host_identity, is_same_process
from runner.spec import JobSpec, invalid_job

Status = Literal["Created", "Running", "Complete", "Failed"]
CREATED: Status = "Created"
RUNNING: Status = "Running"
COMPLETE: Status = "Complete"
FAILED: Status = "Failed"
TERMINAL = frozenset({COMPLETE, FAILED})
NEXT: dict[Status, frozenset[Status]] = {
    CREATED: frozenset({RUNNING, FAILED}),
    RUNNING: frozenset({COMPLETE, FAILED}),
    COMPLETE: frozenset(),
    FAILED: frozenset(),
}
"""The only moves a job's status can make."""

PRIVATE = 0o700
"""The state dir, the jobs folder and every job's folder: its user's alone, as ~/.ssh is
(records hold the job's variables, logs its output, work/ its checkpoints)."""
PRIVATE_FILE = 0o600

OWNER_GONE = Cause.RUNNER_EXITED.value
DELETED = ".deleted-"
RESERVED = "standby.json"
"""In a job folder made ahead for a standby (no `job.json` yet): who holds it (`reserve`)."""
"""A job folder being deleted is renamed to this, plus its name, first."""


def now() -> datetime:
    return datetime.now(UTC)


class ProcessRef(BaseModel):
    """A process named by pid and start time, so a reused pid is never mistaken for it.

    `host` names the pid namespace and boot it lives in: from another, its pid
    means nothing, and whether it is alive cannot be told.
    """

    pid: int
    ticks: int | None = None
    host: str | None = None

    @classmethod
    def of(cls, pid: int, ticks: int | None) -> ProcessRef:
        return cls(pid=pid, ticks=ticks, host=host_identity())

    def gone(self) -> bool:
        """True only when this reader can tell the process has ended."""
        if self.host is not None and self.host != host_identity():
            return False
        return not is_same_process(self.pid, self.ticks)


class StepRecord(BaseModel):
    name: str
    process: ProcessRef | None = None
    exit_code: int | None = None


class WarmStart(BaseModel):
    """A job started from a standby (`runner.warm`): what it had imported beforehand."""

    preloaded: list[str] = Field(default_factory=list)


def _not_found(name: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job named {name!r}; `runner jobs` lists the jobs")


def new_tag(name: str) -> str:
    return f"{name}.{secrets.token_hex(8)}"


class JobRecord(BaseModel):
    name: str
    tag: str
    """Carried in the environment of every process of the job (see `process.TAG`)."""
    status: Status = CREATED
    spec: JobSpec
    created: datetime = Field(default_factory=now)
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    """Why it is final, in words for people (`cause` is for code)."""
    cause: Cause | None = None
    env_key: str | None = None
    index: dict[str, Any] | None = None
    """The index configuration the job's env was resolved with (job, settings, PIP_*)."""
    owner: ProcessRef | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    gpus: list[str] = Field(default_factory=list)
    """The UUIDs of the GPUs the job holds while it runs, node-0's first."""
    base_python: str | None = None
    """The interpreter the job's env is a layer over (a cached env's, or one given)."""
    cpus: list[int] = Field(default_factory=list)
    """The CPU cores the job holds while it runs, node-0's first."""
    warm: WarmStart | None = None
    """Set when its process was a standby's (a warm start); None: started cold."""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def shown(self) -> dict[str, Any]:
        """The record as people and tools see it: variables by name only, never their values
        (job.json itself keeps them, readable by its user alone)."""
        data: dict[str, Any] = self.model_dump(mode="json")
        data["spec"]["env"] = sorted(self.spec.env)
        data["spec"]["index"] = self.spec.index.shown()  # credentials masked
        data["duration"] = self.duration
        return data

    @property
    def orphaned(self) -> bool:
        """Live as recorded, but its owner is known to be gone."""
        return not self.done and self.owner is not None and self.owner.gone()

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or now()) - self.started).total_seconds()


class _RecordParser:
    """Each line of a job's log as its record; a line that is not one (a disk fault, a hand
    edit) becomes a `log.unreadable` error record saying so, and the lines after it are read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.number = 0
        self.timestamp: object = None

    def __call__(self, line: str) -> dict[str, Any]:
        self.number += 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and {"event", "level"} <= record.keys():
            self.timestamp = record.get("timestamp", self.timestamp)
            return record
        return {
            "timestamp": self.timestamp,
            "level": "error",
            "event": "log.unreadable",
            "number": self.number,
            "error": f"line {self.number} of the log of job {self.name!r} is not a record: "
            f"{line.strip()[:60]!r}",
        }


def _unreadable(name: str, path: Path, exc: OSError) -> CorruptRecordError:
    return CorruptRecordError(
        f"job {name!r}: its record {path} is unreadable (it cannot be opened: "
        f"{exc.strerror or exc}); `runner rm {name}` removes it"
    )


def _holds_record(folder: Path) -> bool:
    """A job's folder: one with a `job.json`, or one that cannot be looked into (its record
    is then named as unreadable, never silently left out)."""
    try:
        os.lstat(folder / "job.json")
    except FileNotFoundError:
        return False
    except OSError:
        return folder.is_dir()
    return True


class JobStore:
    """The job folders under `<state_dir>/jobs`."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).expanduser() / "jobs"
        self._check(write=False)

    def check_writable(self) -> None:
        """Refuse, naming the folder, a state dir where a new job could not be recorded."""
        self._check(write=True)

    def _check(self, *, write: bool) -> None:
        problem = dir_problem(self.root.parent, write=False, mode=PRIVATE) or dir_problem(
            self.root, write=write, mode=PRIVATE
        )
        if problem:
            raise StateDirError(f"cannot use the job records at {self.root}: {problem}")

    def dir(self, name: str) -> Path:
        return self.root / name

    def log_path(self, name: str) -> Path:
        return self.dir(name) / "log.jsonl"

    def workdir(self, name: str) -> Path:
        return self.dir(name) / "work"

    def cancel_path(self, name: str) -> Path:
        return self.dir(name) / "cancel"

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """The job's lock (an OS lock on `job.lock`); a job deleted meanwhile is not re-created."""
        try:
            fd = os.open(self.dir(name) / "job.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except (FileNotFoundError, NotADirectoryError):
            raise _not_found(name) from None
        except OSError as exc:  # a job folder this user cannot enter
            raise _unreadable(name, self.dir(name), exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def create(
        self, spec: JobSpec, owner: ProcessRef | None = None, *, reserved: str | None = None
    ) -> JobRecord:
        """Record a new job; refused before anything is written if its record would not
        read back (a value set past validation), since every reader would then fail.

        `reserved`: the tag of a folder made ahead for this name (`reserve`), which the job
        takes over with its standby.
        """
        tag = reserved or new_tag(spec.name)
        record = JobRecord(name=spec.name, tag=tag, spec=spec, owner=owner)
        try:
            JobRecord.model_validate_json(record.model_dump_json())
        except ValidationError as exc:
            raise invalid_job(exc) from None
        if not reserved:
            self._make_folder(spec.name)
        try:
            os.close(os.open(self.log_path(spec.name), os.O_CREAT | os.O_WRONLY, PRIVATE_FILE))
            self._write(record)
            (self.dir(spec.name) / RESERVED).unlink(missing_ok=True)
            listing.record(self.root, record.created, spec.name)
        except BaseException as exc:  # a full disk, Ctrl-C: no half-made job is left
            shutil.rmtree(self.dir(spec.name), ignore_errors=True)
            if not isinstance(exc, (OSError, StateDirError)):
                raise
            problem = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else exc
            raise StateDirError(f"cannot record the job {spec.name!r}: {problem}") from None
        return record

    def _make_folder(self, name: str) -> None:
        try:
            self.dir(name).mkdir(mode=PRIVATE)
        except FileExistsError:
            raise InvalidJobError(
                f"a job named {name!r} already exists; choose another name "
                f"or delete it first (`runner rm {name}`)"
            ) from None
        try:
            self.dir(name).chmod(PRIVATE)  # whatever the umask
            self.workdir(name).mkdir(mode=PRIVATE)
        except BaseException as exc:
            shutil.rmtree(self.dir(name), ignore_errors=True)
            if not isinstance(exc, OSError):
                raise
            raise StateDirError(f"cannot record the job {name!r}: {exc.strerror}") from None

    def reserve(self, name: str, owner: ProcessRef) -> None:
        """Make a job's folder ahead of its job, for a standby that waits in it; readers
        skip it (no `job.json`) and `sweep` removes it once `owner` is gone."""
        self.root.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
        self._make_folder(name)
        try:
            atomic_write_text(self.dir(name) / RESERVED, owner.model_dump_json())
        except BaseException:  # a full disk: the folder just made goes, never a husk
            shutil.rmtree(self.dir(name), ignore_errors=True)
            raise

    def unreserve(self, name: str) -> None:
        """Remove a folder made ahead that no job took."""
        folder = self.dir(name)
        if (folder / RESERVED).exists() and not (folder / "job.json").exists():
            shutil.rmtree(folder, ignore_errors=True)

    def sweep(self) -> None:
        """Remove the folders made ahead whose holder is gone (killed with its standbys)."""
        for marker in self.root.glob(f"*/{RESERVED}"):
            try:
                owner = ProcessRef.model_validate_json(marker.read_bytes())
            except (OSError, ValidationError):
                continue
            if owner.gone():
                self.unreserve(marker.parent.name)

    def _write(self, record: JobRecord) -> None:
        path = self.dir(record.name) / "job.json"
        try:
            atomic_write_text(path, record.model_dump_json(indent=2))
        except FileNotFoundError:
            raise _not_found(record.name) from None  # deleted meanwhile
        except OSError as exc:  # a full disk, say
            raise StateDirError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _read(self, name: str) -> JobRecord:
        path = self.dir(name) / "job.json"
        try:
            return JobRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise _not_found(name) from None
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        except OSError as exc:  # EACCES, EISDIR, ELOOP: a record that cannot be opened at all
            raise _unreadable(name, path, exc) from None
        raise CorruptRecordError(
            f"job {name!r}: its record {path} is unreadable ({problem}); "
            f"`runner rm {name}` removes it"
        )

    def load(self, name: str) -> JobRecord:
        """The job's record as a reader sees it; nothing is written, nothing is signalled.

        A live status whose owner this reader knows to be gone reads as Failed
        ("runner exited"), which is what `reap` will record.
        """
        record = self._read(name)
        if not record.orphaned:
            return record
        return record.model_copy(
            update={"status": FAILED, "reason": OWNER_GONE, "cause": Cause.RUNNER_EXITED}
        )

    def reap(self, name: str, grace: float) -> JobRecord:
        """Record an ownerless live job as Failed and end what it left running; idempotent."""
        with self._locked(name):
            record = self._read(name)
            if not record.orphaned:
                return record
            end_tree(record.tag, grace)
            record = record.model_copy(
                update={
                    "status": FAILED,
                    "reason": OWNER_GONE,
                    "cause": Cause.RUNNER_EXITED,
                    "finished": now(),
                }
            )
            self._write(record)
            return record

    def update(self, name: str, **changes: object) -> JobRecord:
        """Read-modify-write under the job's lock; the status only moves through `advance`."""
        assert "status" not in changes, "use advance() to change a job's status"
        with self._locked(name):
            record = self._read(name).model_copy(update=changes)
            self._write(record)
            return record

    def advance(
        self, name: str, status: Status, *, expect: Status | None = None, **changes: object
    ) -> JobRecord | None:
        """Move the job to `status` (with `changes`), or None where that move is not allowed.

        `expect`: move only from that status.

        Under the job's lock: of two writers racing (an owner starting the job,
        a cancel from another process), exactly one wins, and a final status
        stays final.
        """
        with self._locked(name):
            record = self._read(name)
            if status not in NEXT[record.status] or expect not in (None, record.status):
                return None
            record = record.model_copy(update={**changes, "status": status})
            self._write(record)
            return record

    def scan(self) -> tuple[list[JobRecord], list[CorruptRecordError]]:
        """Every readable job, oldest first, and what is wrong with each unreadable one."""
        records, broken = [], []
        for path in self.root.iterdir():
            if path.name.startswith(".") or not _holds_record(path):
                continue
            try:
                records.append(self.load(path.name))
            except JobNotFoundError:  # deleted meanwhile
                continue
            except CorruptRecordError as exc:
                broken.append(exc)
        return sorted(records, key=lambda r: r.created), broken

    def page(self, limit: int | None) -> tuple[list[JobRecord], list[CorruptRecordError], int]:
        """The newest `limit` jobs (None: all), newest first, reading no other record; the
        unreadable ones; and how many jobs there are."""
        broken: list[CorruptRecordError] = []

        def created_of(name: str) -> datetime | None:
            if not _holds_record(self.dir(name)):
                return None  # a folder made ahead for a standby, or a job being made
            try:
                return self.load(name).created
            except JobNotFoundError:
                return None
            except CorruptRecordError as exc:
                broken.append(exc)
                return None

        try:
            names = [e.name for e in os.scandir(self.root) if not e.name.startswith(".")]
        except FileNotFoundError:
            return [], [], 0
        order = listing.newest(self.root, names, created_of)
        records = []
        for name in order[:limit]:
            try:
                records.append(self.load(name))
            except JobNotFoundError:  # deleted meanwhile
                continue
            except CorruptRecordError as exc:
                broken.append(exc)
        return records, broken, len(order)

    def ended_before(self, cutoff: datetime) -> tuple[list[JobRecord], list[CorruptRecordError]]:
        """The jobs whose final status was recorded before `cutoff`, and the unreadable ones.

        A job whose runner died counts once `reap` recorded its end.
        """
        records, broken = self.scan()
        ended = [r for r in records if r.done and r.finished and r.finished <= cutoff]
        return ended, broken

    def jobs(self) -> list[JobRecord]:
        """Every readable job, oldest first."""
        return self.scan()[0]

    def delete(self, name: str) -> None:
        """Remove the job's folder: out of sight by one rename, then as far as it goes, so a
        delete cut short (Ctrl-C, kill -9) never leaves half a job under its name."""
        if not name or name.startswith(".") or "/" in name or not self.dir(name).is_dir():
            raise _not_found(name)
        trash = self.root / f"{DELETED}{name}-{secrets.token_hex(4)}"
        try:
            self.dir(name).rename(trash)
        except FileNotFoundError:
            raise _not_found(name) from None
        for leftover in self.root.glob(f"{DELETED}*"):  # this one, and any cut short before
            shutil.rmtree(leftover, ignore_errors=True)

    def records(
        self, name: str, *, follow: bool = False, poll: float = 0.1
    ) -> Iterator[dict[str, Any]]:
        """The job's log records; with `follow`, keep reading until the job has ended."""
        path = self.log_path(name)
        try:
            fh = path.open(encoding="utf-8", errors="replace")  # a bad byte: one bad line
        except FileNotFoundError:
            self._read(name)  # raises JobNotFoundError with the usual message
            raise LogMissingError(
                f"job {name!r} has no log: {path} was deleted"
                + ("" if self.load(name).done else " (its runner puts it back when the job ends)")
            ) from None
        with fh:
            parse = _RecordParser(name)
            pending = ""
            while True:
                chunk = fh.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        yield parse(pending)
                        pending = ""
                    continue
                if not follow or self.load(name).done:
                    # one last read: the owner writes its final records before the status
                    rest = fh.read()
                    for line in (pending + rest).splitlines(keepends=True):
                        if line.endswith("\n"):
                            yield parse(line)
                    return
                time.sleep(poll)
