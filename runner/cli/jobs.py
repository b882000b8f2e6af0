"""`runner train`, `jobs`, `status`, `logs`, `cancel`, `rm`: jobs from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from runner.cli.common import (
    base_options,
    base_python_of,
    check_script,
    duration_option,
    emit,
    grouped,
    index_of,
    json_option,
    lockfile_of,
    lockfile_options,
    package_options,
    packages_of,
    script_metadata,
    settings_of,
    size_option,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from runner.sandbox import Mount
    from runner.settings import RunnerSettings
    from runner.spec import JobSpec
    from runner.store import JobRecord, JobStore
    from runner.warm.served import Served


def _store(ctx: click.Context) -> JobStore:
    from runner.store import JobStore

    return JobStore(settings_of(ctx).state_dir)


def _exit_code(record: JobRecord) -> int:
    from runner.outcome import exit_code

    return exit_code(record)


def _verbose(ctx: click.Context) -> bool:
    return bool(ctx.find_root().meta.get("verbose"))


class _Echo:
    """Prints a job's records as they come: JSON lines (`--log-format json`), or the job's own
    lines on stdout and the runner's as a person reads them on stderr, with progress on long
    work (`runner.human`, `progress.py`)."""

    def __init__(self, fmt: str, ranks: bool, verbose: bool) -> None:
        from runner.cli.progress import progress

        self._json = fmt == "json"
        self._ranks = ranks
        self._verbose = verbose
        self._lock = threading.Lock()
        self._progress = None if self._json else progress()

    def __call__(self, record: dict[str, Any]) -> None:
        from runner.logs import as_text, say

        if self._progress is not None:
            self._progress(record)
        if self._json:
            text, out = json.dumps(record, default=str, ensure_ascii=False), sys.stdout
        elif record["event"] == "output":
            out = sys.stderr if record.get("stream") == "stderr" else sys.stdout
            text = as_text(record, self._ranks)
        else:
            out = sys.stderr
            said = say(record, out, self._verbose)
            if said is None:
                return
            text = said
        end = "" if not self._json and record.get("partial") else "\n"  # a progress bar moves
        with self._lock:  # a reader that went away (`| head`) ends the printing: see JobLog
            out.write(text + end)
            out.flush()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _misplaced_options(args: tuple[str, ...]) -> list[str]:
    """Arguments after SCRIPT that are `train`'s own options: they go to the script."""
    names = {opt for param in train.params for opt in param.opts if opt.startswith("--")}
    return [a for a in args if a.split("=", 1)[0] in names]


def _interrupt_on_sigterm() -> None:
    """SIGTERM, and SIGHUP (its terminal closed), cancel the job as Ctrl-C does: with grace."""

    def handler(_signum: int, _frame: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


TRAIN_SECTIONS = {
    "Packages": ("with_", "req_files", "index_url", "extra_index_url", "find_links"),
    "Lockfiles and bases": ("lockfile", "environment", "base", "base_python"),
    "Ranks and devices": ("nproc_per_node", "nnodes", "torchrun", "gpus", "cpus"),
    "Sandbox and limits": (
        *("sandbox", "network", "sandbox_fs", "mounts", "data_cache"),
        *("memory", "cpu_time", "open_files", "processes"),
    ),
    "Job": ("module", "env_vars", "env_files", "name", "timeout", "detach", "cold", "preload"),
}
"""`runner train --help`'s groups of options."""


@click.command(
    cls=grouped(TRAIN_SECTIONS),
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("script", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-m", "module", help="Run a module (like python -m) instead of a script.")
@package_options
@click.option(
    "--nproc-per-node",
    type=click.IntRange(min=1),
    help="Local ranks per node (default: one per GPU, else 1).",
)
@click.option(
    "--gpus",
    metavar="N|all|0,2",
    help="GPUs per node (N, or all), or the GPUs to use by index or UUID; waits until free.",
)
@click.option("--nnodes", type=click.IntRange(min=1), default=1, help="Local torchrun nodes.")
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    help="CPU cores per node, a set of its own (waits until free).",
)
@click.option(
    "--torchrun",
    is_flag=True,
    help="Run under torchrun's agent (else one node's ranks start as torchrun starts them).",
)
@click.option(
    "--env",
    "env_vars",
    multiple=True,
    metavar="KEY=VALUE|NAME",
    help="Job variable; a bare NAME passes your own variable of that name.",
)
@click.option(
    "--env-file",
    "env_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Job variables from a dotenv file (KEY=VALUE lines); --env wins.",
)
@lockfile_options
@base_options
@click.option("--name", help="Job name (default: a fresh one).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds.")
@click.option("--detach", is_flag=True, help="Start the job and return; see `runner logs -f`.")
@click.option(
    "--cold",
    is_flag=True,
    help="Start a fresh interpreter, not a standby; leave none for the next run (RUNNER_WARM=0).",
)
@click.option(
    "--preload",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE in the standby left for the next run like this one (RUNNER_PRELOAD).",
)
@click.option(
    "--sandbox", type=click.Choice(["auto", "strict", "off"]), help="Sandbox mode (settings)."
)
@click.option("--network/--no-network", default=None, help="Allow network (loopback only if not).")
@click.option("--sandbox-fs/--no-sandbox-fs", default=None, help="Read-only env and system.")
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="SRC[:DST][:ro|rw]",
    help="Show the job a host path (read-only unless :rw).",
)
@click.option(
    "--data-cache/--no-data-cache",
    default=None,
    help="Share the per-user data cache (HF_HOME, TORCH_HOME) with the job.",
)
@click.option(
    "--memory",
    callback=size_option,
    help="Memory per node, 4G (a cgroup; else address space per process).",
)
@click.option("--cpu-time", type=click.IntRange(min=1), help="CPU seconds per process.")
@click.option("--open-files", type=click.IntRange(min=1), help="Open files per process.")
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Processes per node (a cgroup; else per user, not for root).",
)
@click.pass_context
def train(
    ctx: click.Context,
    script: str | None,
    args: tuple[str, ...],
    module: str | None,
    with_: tuple[str, ...],
    req_files: tuple[str, ...],
    nproc_per_node: int | None,
    gpus: str | None,
    nnodes: int,
    cpus: int | None,
    torchrun: bool,
    env_vars: tuple[str, ...],
    env_files: tuple[str, ...],
    lockfile: str | None,
    environment: str | None,
    base: str | None,
    base_python: str | None,
    index_url: str | None,
    extra_index_url: tuple[str, ...],
    find_links: tuple[str, ...],
    name: str | None,
    timeout: float | None,
    detach: bool,
    cold: bool,
    preload: tuple[str, ...],
    sandbox: str | None,
    network: bool | None,
    sandbox_fs: bool | None,
    mounts: tuple[str, ...],
    data_cache: bool | None,
    memory: int | None,
    cpu_time: int | None,
    open_files: int | None,
    processes: int | None,
) -> None:
    """Run SCRIPT (or -m MODULE) with ARGS in a cached environment.

    \b
    runner train --with torch==2.13.0 --nproc-per-node 2 examples/train_ddp.py --epochs 3
    """
    from envs.requirements import name_of
    from runner.job import execute, preflight
    from runner.spec import JobSpec
    from runner.warm import served

    settings = settings_of(ctx)
    entry = _entry(script, module, args)
    gpu_fields = _gpus(settings, gpus, nnodes)
    requirements = packages_of(with_, req_files)
    script_meta = script_metadata(script if module is None else None)
    locked = lockfile_of(settings, lockfile, environment)
    if script_meta is not None and locked is None:  # its dependencies join the set
        requirements = script_meta.merged(requirements)
    if nproc_per_node is None:  # a torch job gets one rank per GPU, as on the cluster
        torch_job = torchrun or nnodes > 1 or "torch" in {name_of(r) for r in requirements}
        nproc_per_node = gpu_fields.get("gpus", 1) if torch_job else 1
    fields: dict[str, Any] = {
        **gpu_fields,
        "cpus": cpus or 0,
        "base_python": base_python_of(settings, base, base_python),
        "entry": entry,
        "requirements": requirements,
        "index": index_of(index_url, extra_index_url, find_links),
        "env": _job_env(env_files, env_vars),
        "framework": "torch" if (torchrun or nproc_per_node > 1 or nnodes > 1) else "python",
        "launcher": "torchrun" if torchrun else "direct",
        "nproc_per_node": nproc_per_node,
        "num_nodes": nnodes,
        "timeout": timeout,
        "sandbox": _policy(
            settings,
            mode=sandbox,
            network=network,
            filesystem=sandbox_fs,
            data_cache=data_cache,
            mounts=_mounts(settings, mounts),
            memory=memory,
            cpu_seconds=cpu_time,
            open_files=open_files,
            processes=processes,
        ),
    }
    if name is not None:
        fields["name"] = name
    if locked is not None:
        fields["lockfile"] = locked
    if script_meta is not None:
        check_script(settings, script_meta, locked, fields["base_python"])
    spec = JobSpec.create(**fields)
    assert spec.sandbox is not None
    store = _store(ctx)
    preflight(store, settings, spec)  # strict mode, unusable folders: named before anything
    warm = None if cold or detach or name else served.warm(settings, preload)
    spec = _record(store, spec, warm)
    if detach:
        _detach(store, spec.name)
        click.echo(spec.name)
        return
    _interrupt_on_sigterm()
    echo = _Echo(settings.log_format, ranks=nproc_per_node * nnodes > 1, verbose=_verbose(ctx))
    try:
        record = execute(store, spec.name, settings, echo=echo, warm=warm)
    except KeyboardInterrupt:
        echo.stop()
        click.echo(f"job {spec.name} Failed: cancelled; `runner logs {spec.name}`", err=True)
        sys.exit(130)
    echo.stop()
    for line in _env_failure(store, record):
        click.echo(line, err=True)
    click.echo(_summary(record), err=True)
    sys.exit(_exit_code(record))


def _record(store: JobStore, spec: JobSpec, warm: Served | None) -> JobSpec:
    """Record the job, with the standby it takes if one is ready (then under its name)."""
    standby = warm.take(spec) if warm is not None else None
    if standby is not None:  # the job takes its name: its folders are the standby's
        spec = spec.model_copy(update={"name": standby.name})
    try:
        store.create(spec, reserved=standby.tag if standby else None)
    except BaseException:
        if warm is not None and standby is not None:
            warm.release(standby)
        raise
    return spec


def _env_failure(store: JobStore, record: JobRecord) -> list[str]:
    """Where the job's env could not be built: what uv (or rattler) said beyond the reason's
    first line, whole (the versions there are, its hints), indented as one block."""
    from runner.outcome import Cause, cause_of

    if cause_of(record) != Cause.ENVIRONMENT:
        return []
    said = [r.get("error", "") for r in store.records(record.name) if r["event"] == "env.failed"]
    rest = str(said[-1]).splitlines()[1:] if said else []
    return [f"  {line}" if line else "" for line in rest]


def _summary(record: JobRecord) -> str:
    """The last line: the job's name, how it ended, and the command that shows its log."""
    from runner.logs import colour
    from runner.units import format_duration

    seconds = f" in {format_duration(record.duration)}" if record.duration is not None else ""
    how = f": {record.reason}" if record.reason else seconds
    status = str(record.status)
    if colour(sys.stderr):  # as uv marks what went well and what did not
        status = f"\x1b[1;{32 if record.status == 'Complete' else 31}m{status}\x1b[0m"
    return f"job {record.name} {status}{how}; `runner logs {record.name}`"


def _entry(script: str | None, module: str | None, args: tuple[str, ...]) -> dict[str, Any]:
    """What the job runs: SCRIPT or -m MODULE, with the arguments after it."""
    from runner.errors import InvalidJobError

    if module is None and script is None:
        raise click.UsageError("give a SCRIPT to run, or -m MODULE")
    if module is None and script is not None and script.startswith("-"):
        raise click.UsageError(f"no such option: {script} (options go before SCRIPT)")
    for arg in _misplaced_options(args):
        click.echo(
            f"warning: {arg} comes after the script, so the script gets it, not `runner train`; "
            "put train's options before SCRIPT",
            err=True,
        )
    if module is not None:
        argv = (*filter(None, [script]), *args)
        return {"kind": "module", "target": module, "argv": argv, "cwd": str(Path.cwd())}
    assert script is not None
    if Path(script).is_dir():
        raise InvalidJobError(f"script {script!r} is a directory: give the .py file to run")
    if not Path(script).is_file():
        why = "is not a file" if Path(script).exists() else "does not exist"
        raise InvalidJobError(f"script {script!r} {why}")
    return {"kind": "script", "target": str(Path(script).resolve()), "argv": args}


def _gpus(settings: RunnerSettings, value: str | None, nodes: int) -> dict[str, Any]:
    """The spec's GPU fields from `--gpus`: a count per node, or the GPUs named (for all nodes)."""
    from runner.gpus import request

    if value is None:
        return {}
    asked = request(value, len(settings.gpu_pool()))
    if isinstance(asked, int):
        return {"gpus": asked}
    if len(asked) % nodes:
        raise click.BadParameter(
            f"{len(asked)} GPUs named for {nodes} nodes: name the same number for each",
            param_hint="--gpus",
        )
    return {"gpus": len(asked) // nodes, "gpu_ids": asked}


def _job_env(files: tuple[str, ...], items: tuple[str, ...]) -> dict[str, str]:
    """The job's variables: each --env-file in turn, then each --env (KEY=VALUE, or NAME)."""
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    env: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = (
                "does not exist" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc}"
            )
            raise click.BadParameter(f"{path!r} {problem}", param_hint="--env-file") from None
        for binding in parse_stream(io.StringIO(text)):  # a typo is refused, not skipped
            if binding.error:
                line = binding.original.string.strip()
                raise click.BadParameter(
                    f"{path}:{binding.original.line}: {line!r} is not KEY=VALUE",
                    param_hint="--env-file",
                )
        for key, value in dotenv_values(stream=io.StringIO(text)).items():
            env[key] = _passed(key, "--env-file") if value is None else value
    for item in items:
        key, sep, value = item.partition("=")
        env[key] = value if sep else _passed(key, "--env")
    return env


def _passed(name: str, option: str) -> str:
    """A variable passed through by name: it must be set here."""
    if name not in os.environ:
        raise click.BadParameter(
            f"{name!r} is not set in your environment (give {name}=VALUE to set it)",
            param_hint=option,
        )
    return os.environ[name]


def _mounts(settings: RunnerSettings, given: tuple[str, ...]) -> tuple[Mount, ...] | None:
    """The settings' mounts and those of the command line."""
    from runner.sandbox import Mount

    if not given:
        return None
    try:
        return (*settings.policy().mounts, *(Mount.parse(m) for m in given))
    except ValueError as exc:
        raise click.BadParameter(_first_error(exc), param_hint="--mount") from None


def _first_error(exc: ValueError) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return str(exc)


def _policy(settings: RunnerSettings, **flags: Any) -> dict[str, Any]:
    """The settings' sandbox with what the command line changed, for the job's spec to
    validate (`--memory 0` is refused there, naming it)."""
    return {**dict(settings.policy()), **{k: v for k, v in flags.items() if v is not None}}


def _detach(store: JobStore, name: str) -> None:
    """Leave a supervisor behind as the job's owner, in its own session."""
    from runner.process import start_ticks
    from runner.store import ProcessRef

    log = store.dir(name) / "supervisor.log"
    with os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner.cli", "--log-format", "json", "_supervise", name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ.copy(),
        )
    store.update(name, owner=ProcessRef.of(proc.pid, start_ticks(proc.pid)))


@click.command("_supervise", hidden=True)
@click.argument("name")
@click.pass_context
def supervise(ctx: click.Context, name: str) -> None:
    """Own a detached job until it ends (started by `runner train --detach`)."""
    from runner.job import execute

    _interrupt_on_sigterm()
    try:
        execute(_store(ctx), name, settings_of(ctx))
    except KeyboardInterrupt:
        sys.exit(130)


@click.command()
@json_option
@click.option(
    "--reap", is_flag=True, help="Record jobs whose runner died as Failed; end what they left."
)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Show the newest N jobs.",
)
@click.option("--all", "show_all", is_flag=True, help="Show every job.")
@click.pass_context
def jobs(ctx: click.Context, as_json: bool, reap: bool, limit: int, show_all: bool) -> None:
    """List jobs, newest first: the newest 20 (-n N, or --all)."""
    store = _store(ctx)
    if reap:  # every record is read: a job left Running may be an old one
        records, broken = store.scan()
        grace = settings_of(ctx).cancel_grace
        records = [store.reap(r.name, grace) if r.finished is None else r for r in records]
        records.reverse()
        total = len(records)
        records = records if show_all else records[:limit]
    else:
        records, broken, total = store.page(None if show_all else limit)
    for problem in broken:  # the others are listed all the same
        click.echo(f"warning: {problem}", err=True)
    lines = [f"{'NAME':<20} {'STATUS':<9} {'CREATED':<19} {'SECONDS':>8}  WHAT"]
    for r in records:
        entry = r.spec.entry
        what = getattr(entry, "target", None) or getattr(entry, "function", "?")
        seconds = f"{r.duration:.1f}" if r.duration is not None else "-"
        created = r.created.isoformat()[:19]
        lines.append(f"{r.name:<20} {r.status:<9} {created:<19} {seconds:>8}  {what}")
    emit([r.shown() for r in records], as_json, "\n".join(lines))
    if not (show_all or as_json) and total > limit:
        click.echo(
            f"the newest {limit} of {total:,} jobs; `runner jobs -n N` or `--all` for more",
            err=True,
        )


@click.command()
@click.argument("name")
@json_option
@click.pass_context
def status(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a job's status, exit code and steps."""
    record = _store(ctx).load(name)
    text = "\n".join(
        [
            f"name:      {record.name}",
            f"status:    {record.status}" + (f" ({record.reason})" if record.reason else ""),
            f"exit code: {record.exit_code if record.exit_code is not None else '-'}",
            f"env:       {record.env_key or '-'}",
            f"gpus:      {', '.join(record.gpus) or '-'}",
            f"cpus:      {', '.join(map(str, record.cpus)) or '-'}",
            f"base:      {record.base_python or '-'}",
            f"created:   {record.created.isoformat()}",
            f"seconds:   {record.duration:.2f}" if record.duration is not None else "seconds:   -",
            f"start:     {'warm (a standby)' if record.warm else 'cold'}",
            *_steps(record),
        ]
    )
    emit(record.shown(), as_json, text)


def _steps(record: JobRecord) -> list[str]:
    """One line per step: its name, and its pid while it runs or its exit code once ended."""
    if not record.steps:
        return ["steps:     -"]
    lines = []
    for i, step in enumerate(record.steps):
        if step.exit_code is not None:
            state = f"exited with code {step.exit_code}"
        elif step.process is not None and not record.done:
            state = f"running (pid {step.process.pid})"
        else:
            state = "-"
        lines.append(f"{'steps:' if i == 0 else '':<11}{step.name}: {state}")
    return lines


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--step", help="Only this step (node-0, node-1, ...).")
@json_option
@click.pass_context
def logs(ctx: click.Context, name: str, follow: bool, step: str | None, as_json: bool) -> None:
    """Print a job's output (--json: every record, runner events included)."""
    from runner.logs import as_text

    store = _store(ctx)
    spec = store.load(name).spec
    if step is not None:
        known = [f"node-{i}" for i in range(spec.num_nodes)]
        if step not in known:
            raise click.ClickException(
                f"job {name} has no step {step!r}; its steps: {', '.join(known)}"
            )
    ranks = spec.nproc_per_node * spec.num_nodes > 1
    open_line = None  # the (step, stream) whose line was printed in part so far
    for record in store.records(name, follow=follow):
        if step is not None and record.get("step") != step:
            continue
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
        elif record["event"] == "output":  # the pieces of a line make it up again
            source = (record.get("step"), record.get("stream"))
            if open_line not in (None, source):  # another stream's line cuts in: end it
                click.echo()
            click.echo(as_text(record, ranks), nl=not record.get("partial"))
            open_line = source if record.get("partial") else None
        elif record["event"] == "log.unreadable":  # the lines after it are still shown
            click.echo(f"warning: {record['error']}", err=True)


@click.command()
@click.argument("name")
@click.pass_context
def cancel(ctx: click.Context, name: str) -> None:
    """Cancel a job: TERM to every process of it, KILL after a grace period."""
    from runner.job import cancel as cancel_job

    record = cancel_job(_store(ctx), name, settings_of(ctx).cancel_grace)
    click.echo(f"{record.name}: {record.status}" + (f" ({record.reason})" if record.reason else ""))


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--older-than",
    callback=duration_option,
    help="Instead of names: every job that ended (Complete or Failed) this long ago (7d; "
    "0s: every ended job). Running and waiting jobs are kept.",
)
@click.option("--dry-run", is_flag=True, help="With --older-than: list, delete nothing.")
@click.pass_context
def rm(
    ctx: click.Context, names: tuple[str, ...], older_than: timedelta | None, dry_run: bool
) -> None:
    """Delete jobs: their record, log, work folder and HOME, cancelling any still running."""
    from envs.files import tree_size
    from runner.errors import CorruptRecordError, JobNotFoundError, StateDirError
    from runner.job import cancel as cancel_job
    from runner.store import now
    from runner.units import format_size

    if bool(names) == (older_than is not None):
        raise click.UsageError("name the jobs to delete, or give --older-than (not both)")
    if dry_run and older_than is None:
        raise click.UsageError("--dry-run goes with --older-than")
    store = _store(ctx)
    if older_than is not None:
        ended, broken = store.ended_before(now() - older_than)
        for problem in broken:  # kept: `runner rm NAME` removes one by name
            click.echo(f"warning: {problem}", err=True)
        freed = 0
        for record in ended:
            size = tree_size(store.dir(record.name))
            if not dry_run:
                try:
                    store.delete(record.name)
                except JobNotFoundError:  # deleted meanwhile by someone else
                    continue
            freed += size
            verb = "would delete" if dry_run else "deleted"
            click.echo(f"{verb} {record.name} ({record.status}, {format_size(size)})")
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {len(ended)} job(s), {format_size(freed)}")
        return
    missing = []
    for name in names:
        try:
            cancel_job(store, name, settings_of(ctx).cancel_grace)
        except (CorruptRecordError, StateDirError) as exc:  # unreadable, or its end cannot
            click.echo(f"warning: {exc}", err=True)  # be recorded (a full disk): it still goes
        except JobNotFoundError as exc:
            try:  # a folder without a record (a create cut short by a crash) still goes
                store.delete(name)
            except JobNotFoundError:
                click.echo(f"error: {exc}", err=True)
                missing.append(name)
                continue
            click.echo(f"deleted {name} (it had no record)")
            continue
        store.delete(name)
        click.echo(f"deleted {name}")
    if missing:
        sys.exit(1)
