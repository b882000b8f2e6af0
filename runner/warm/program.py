"""A standby: an interpreter of a job's env, started inside the sandbox its next job gets.

Run as `python -c SOURCE CONTROL_FD READY_FD WARM_TORCH PRELOADS...` (`source()`: this file,
executed in a namespace of its own, so that no runner module is ever imported and
`__main__` holds nothing of it), it imports the preloads and warms torch (one tiny CPU
forward, backward and optimizer step) in a thread of low CPU priority, says "ready", and
waits for its one job on CONTROL_FD: the job's argv, environment and cwd.
It then becomes that job, as `python SCRIPT ARGS...` or `python -m MODULE ARGS...`
would start it: the job's environment in `os.environ`, its argv, `sys.path[0]` and a
fresh `__main__`; the generators the warm-up used reseeded from the OS; its exit as the
interpreter's, without the teardown (exit handlers run, output flushed, then
`os._exit`, as the runner's function entry ends). Only builtin modules and those
already loaded at start-up are used here.
"""

import _thread
import marshal
import os
import sys

_lock = _thread.allocate_lock()


_imported: list[str] = []
"""The preloads imported, each as `NAME=MS` (what its import took); a name given as `?NAME`
(the job's own packages, by default) is only tried: one that fails to import is left out,
never the standby's end."""


POOLED = ("numpy",)
"""Modules whose library starts a thread pool as it loads (numpy's OpenBLAS: one thread per
core but one), which keeps the CPU priority of the thread that loaded it: loaded by the main
thread, at the job's priority, before the warm-up's thread (nice 19) starts."""


def _load(name: str) -> None:
    """Import a preload (`?NAME`: only tried) and note what it took; one done already is not
    noted again."""
    import time  # builtin, and loaded as the interpreter starts

    bare = name.lstrip("?")
    if any(entry.partition("=")[0] == bare for entry in _imported):
        return
    began = time.perf_counter()
    try:
        __import__(bare)
    except Exception:  # a default that does not import: skipped
        if not name.startswith("?"):
            raise
        sys.modules.pop(bare, None)
        return
    _imported.append(f"{bare}={round((time.perf_counter() - began) * 1000)}")


def _load_pools(torch_too: bool, preloads: list[str]) -> None:
    """The POOLED modules the warm-up would load (torch loads numpy), loaded here first."""
    for module in POOLED:
        named = [p for p in preloads if p.lstrip("?") == module]
        if named:
            _load(named[0])
        elif torch_too:
            try:
                __import__(module)
            except Exception:  # torch without it: torch says so, in the warm-up
                sys.modules.pop(module, None)


def _warm(torch_too: bool, preloads: list[str], done: list[object]) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, _thread.get_native_id(), 19)  # this thread only
    except OSError:
        pass
    try:
        for name in preloads:
            _load(name)
        if torch_too:
            import torch  # type: ignore[import-not-found]

            model = torch.nn.Linear(8, 1)  # what a training step first meets: an optimizer's
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # first import is ~0.8 s
            torch.nn.functional.mse_loss(model(torch.randn(4, 8)), torch.randn(4, 1)).backward()
            optimizer.step()
            optimizer.zero_grad()
    except BaseException as exc:
        done.append(exc)
    done.append(None)
    _lock.release()


_set_by_preloads: dict[str, str] = {}
"""What the warm-up's imports put in `os.environ` (torch: TORCHINDUCTOR_CACHE_DIR): kept for
the job, as their modules are, where the job does not set it itself."""


def _reseed() -> None:
    """What the warm-up drew from: fresh from the OS, as in a new process."""
    if "random" in sys.modules:
        sys.modules["random"].seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _read(fd: int) -> dict | None:  # type: ignore[type-arg]
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    os.close(fd)
    return marshal.loads(data) if data else None


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _end(code: int) -> None:
    """As the interpreter ends, up to its teardown: threads joined, exit handlers, flush."""
    if "threading" in sys.modules:
        sys.modules["threading"]._shutdown()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _run(job: dict) -> object:  # type: ignore[type-arg]
    argv = job["argv"]
    os.environ.clear()
    os.environ.update(job["env"])
    for name, value in _set_by_preloads.items():
        os.environ.setdefault(name, value)
    os.chdir(job["cwd"])
    _reseed()
    main = vars(sys.modules["__main__"])
    main.update(__name__="__main__", __doc__=None, __package__=None, __spec__=None)
    main["__annotations__"] = {}
    if argv[1] == "-m":
        import runpy

        sys.argv = ["-m", *argv[3:]]
        sys.path[0] = job["cwd"]
        return lambda: runpy._run_module_as_main(argv[2])  # type: ignore[attr-defined]
    path = argv[1]
    sys.argv = argv[1:]
    sys.path[0] = os.path.dirname(path)
    loader = sys.modules["_frozen_importlib_external"].SourceFileLoader("__main__", path)
    main.update(__file__=path, __loader__=loader, __cached__=None)
    with open(path, "rb") as fh:  # pathlib is not loaded here
        code = compile(fh.read(), path, "exec")
    return lambda: exec(code, main)  # the job's own script


def _failed(exc: object) -> None:
    print(f"sandbox-runner: the standby's warm-up failed: {exc!r}", file=sys.stderr)
    os._exit(3)


def main() -> None:
    control, ready = int(sys.argv[1]), int(sys.argv[2])
    torch_too, preloads = sys.argv[3] == "1", sys.argv[4:]
    done: list[object] = []
    before = dict(os.environ)
    try:
        _load_pools(torch_too, preloads)
    except BaseException as exc:  # a preload that was named, not only tried
        _failed(exc)
    _lock.acquire()
    _thread.start_new_thread(_warm, (torch_too, preloads, done))
    _lock.acquire()  # the warm-up ended: its thread released it
    _set_by_preloads.update((k, v) for k, v in os.environ.items() if before.get(k) != v)
    if done[0] is not None:
        _failed(done[0])
    os.write(ready, ("r" + ",".join(_imported)).encode())
    os.close(ready)
    job = _read(control)
    if job is None:  # its owner let it go: never a job
        os._exit(0)
    start = _run(job)
    try:
        start()  # type: ignore[operator]
        code = 0
    except SystemExit as exit:
        code = _exit_code(exit.code)
    except KeyboardInterrupt:
        kind, value, trace = sys.exc_info()
        sys.excepthook(kind, value, trace.tb_next.tb_next)  # type: ignore[arg-type,union-attr]
        import signal

        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    except BaseException:
        kind, value, trace = sys.exc_info()
        sys.excepthook(kind, value, trace.tb_next.tb_next)  # type: ignore[arg-type,union-attr]
        code = 1
    _end(code)


def source() -> str:
    """The `-c` argument that runs this program in a namespace of its own."""
    with open(__file__, encoding="utf-8") as fh:
        return f"exec({fh.read()!r}, {{'__name__': '__standby__'}})"


if __name__ == "__standby__":
    main()
