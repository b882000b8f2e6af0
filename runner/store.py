"""Jobs on disk: one folder per job with `job.json` (atomic) and `log.jsonl`.

Any process can list jobs, read their logs and cancel them. Every running job
has one owner process, recorded with its pid and start time; a reader that
finds a job Running whose owner is gone marks it Failed ("runner exited"), so
a status never stays Running forever.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock
from pydantic import BaseModel, Field

from envs.files import atomic_write_text
from runner.errors import InvalidJobError, JobNotFoundError
from runner.process import end_tree, is_same_process
from runner.spec import JobSpec

Status = Literal["Created", "Running", "Complete", "Failed"]
CREATED: Status = "Created"
RUNNING: Status = "Running"
COMPLETE: Status = "Complete"
FAILED: Status = "Failed"
TERMINAL = frozenset({COMPLETE, FAILED})


def now() -> datetime:
    return datetime.now(UTC)


class ProcessRef(BaseModel):
    """A process named by pid and start time, so a reused pid is never mistaken for it."""

    pid: int
    ticks: int | None = None

    def alive(self) -> bool:
        return is_same_process(self.pid, self.ticks)


class StepRecord(BaseModel):
    name: str
    process: ProcessRef | None = None
    exit_code: int | None = None


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
    env_key: str | None = None
    owner: ProcessRef | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return ((self.finished or now()) - self.started).total_seconds()


class JobStore:
    """The job folders under `<state_dir>/jobs`."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir).expanduser() / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)

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
        with FileLock(self.dir(name) / "job.lock"):
            yield

    def create(self, spec: JobSpec, owner: ProcessRef | None = None) -> JobRecord:
        try:
            self.dir(spec.name).mkdir()
        except FileExistsError:
            raise InvalidJobError(
                f"a job named {spec.name!r} already exists; choose another name "
                f"or delete it first (`runner rm {spec.name}`)"
            ) from None
        self.workdir(spec.name).mkdir()
        self.log_path(spec.name).touch()
        record = JobRecord(name=spec.name, tag=new_tag(spec.name), spec=spec, owner=owner)
        self._write(record)
        return record

    def _write(self, record: JobRecord) -> None:
        atomic_write_text(self.dir(record.name) / "job.json", record.model_dump_json(indent=2))

    def _read(self, name: str) -> JobRecord:
        try:
            return JobRecord.model_validate_json((self.dir(name) / "job.json").read_bytes())
        except FileNotFoundError:
            raise JobNotFoundError(f"no job named {name!r}; `runner jobs` lists the jobs") from None

    def load(self, name: str, grace: float = 5.0) -> JobRecord:
        """The job's record; a live status whose owner died is settled as Failed.

        What that owner left running is ended too (every process tagged as the
        job's): no worker outlives its job's record.
        """
        record = self._read(name)
        if record.done or record.owner is None or record.owner.alive():
            return record
        with self._locked(name):
            record = self._read(name)
            if not record.done and record.owner is not None and not record.owner.alive():
                end_tree(record.tag, grace)
                record = record.model_copy(
                    update={"status": FAILED, "reason": "runner exited", "finished": now()}
                )
                self._write(record)
        return record

    def update(self, name: str, **changes: object) -> JobRecord:
        """Read-modify-write under the job's lock."""
        with self._locked(name):
            record = self._read(name).model_copy(update=changes)
            self._write(record)
            return record

    def jobs(self) -> list[JobRecord]:
        """Every job, oldest first."""
        records = []
        for path in self.root.iterdir():
            if (path / "job.json").exists():
                try:
                    records.append(self.load(path.name))
                except JobNotFoundError:  # deleted meanwhile
                    continue
        return sorted(records, key=lambda r: r.created)

    def delete(self, name: str) -> None:
        if not self.dir(name).exists():
            raise JobNotFoundError(f"no job named {name!r}; `runner jobs` lists the jobs")
        shutil.rmtree(self.dir(name))

    def records(
        self, name: str, *, follow: bool = False, poll: float = 0.1
    ) -> Iterator[dict[str, Any]]:
        """The job's log records; with `follow`, keep reading until the job has ended."""
        path = self.log_path(name)
        if not path.exists():
            self._read(name)  # raises JobNotFoundError with the usual message
        with path.open(encoding="utf-8") as fh:
            pending = ""
            while True:
                chunk = fh.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        yield json.loads(pending)
                        pending = ""
                    continue
                if not follow or self.load(name).done:
                    # one last read: the owner writes its final records before the status
                    rest = fh.read()
                    for line in (pending + rest).splitlines(keepends=True):
                        if line.endswith("\n"):
                            yield json.loads(line)
                    return
                time.sleep(poll)
