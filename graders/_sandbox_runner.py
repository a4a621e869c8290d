"""The program that runs *inside* the sandbox (stdlib only; passed to the interpreter with
``-c``, so no file of this project needs to be visible in there).

Protocol on stdin/stdout, one JSON object per line:

1. setup ``{"mode": "python"|"code", "source": str|null, "workdir": str,
   "cpu_seconds": int, "wall_s": float, "output_cap": int, "self_limits": {...}|null}``
   -> ``{"ok": true}`` or ``{"ok": false, "detail": ...}`` (syntax error, no ``grade``).
2. requests, one per sample:
   - python: ``{"sample": ..., "item": ...}`` -> ``{"ok": true, "value": <number>}`` or
     ``{"ok": false, "kind": ..., "detail": ...}``
   - code: ``{"code": str, "cases": [...], "timeout_s": float}`` ->
     ``{"ok": true, "passed": int, "total": int, "failures": [str, ...]}``

Each request runs in a forked child with its own CPU-time limit; user code's prints go
to a capped buffer. After every request all other processes in the sandbox are killed
(``kill(-1)`` from PID 1 of the PID namespace), so nothing a sample started survives
into the next one, and the working dir is emptied. The host enforces the wall-clock
limit by killing the whole sandbox.

The working dir comes from the host: ``/work`` (a private tmpfs) in the sandbox, a fresh
``rft-unsafe-grader-*`` temp dir in the operator's unsafe mode. The runner refuses to
empty any other directory: emptying a host path by mistake would destroy real data.
"""

import json
import os
import resource
import select
import shutil
import signal
import sys
import time
import traceback

DETAIL_CAP = 2000
WORKDIR = None


def workdir_is_disposable(path):
    """Only the sandbox's own tmpfs (as PID 1 of the namespace) or a dedicated temp dir."""
    if os.getpid() == 1 and path == "/work":
        return True
    return os.path.basename(path.rstrip("/")).startswith("rft-unsafe-grader-") and os.path.isdir(path)


class CappedWriter:
    """A text stream that keeps the first ``cap`` characters and drops the rest."""

    def __init__(self, cap):
        self.cap = cap
        self.parts = []
        self.size = 0

    def write(self, text):
        if self.size < self.cap:
            self.parts.append(text[: self.cap - self.size])
        self.size += len(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def send(obj):
    line = json.dumps(obj)
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()


def short_traceback(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-DETAIL_CAP:]


def user_traceback(exc):
    # Only the frames of the user's code: the runner's own frames are noise to them.
    tb = exc.__traceback__
    frames = [f for f in traceback.extract_tb(tb) if f.filename in ("<grader>", "<solution>", "<test>")]
    text = "".join(traceback.format_list(frames)) + short_traceback(exc)
    return text.strip()[-DETAIL_CAP:]


def clean_up_children():
    """Kill every other process in the sandbox and reap them."""
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.001)
            continue


def empty_workdir():
    """Remove what a sample left in the working dir (only a disposable one)."""
    if WORKDIR is None or not workdir_is_disposable(WORKDIR):
        return
    for name in os.listdir(WORKDIR):
        path = os.path.join(WORKDIR, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def run_forked(body, cpu_seconds, wall_s, cap):
    """Run ``body()`` (returns a JSON-able dict) in a child; returns its dict.

    The child gets fresh CPU-time limits; the parent waits at most ``wall_s``.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if os.getpid() != 1:
                os.setpgid(0, 0)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
            result = body()
        except BaseException as exc:
            result = {"ok": False, "kind": "runtime", "detail": user_traceback(exc)}
        try:
            data = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            data = json.dumps({"ok": False, "kind": "type", "detail": short_traceback(exc)}).encode()
        if len(data) > cap:
            data = json.dumps({"ok": False, "kind": "output", "detail": "result larger than the output cap"}).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
        os._exit(0)
    os.close(w)
    chunks = []
    size = 0
    deadline = time.monotonic() + wall_s
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        chunk = os.read(r, 65536)
        if not chunk:
            break
        size += len(chunk)
        if size <= cap:
            chunks.append(chunk)
    os.close(r)
    if timed_out:
        os.kill(pid if os.getpid() == 1 else -pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.getpid() != 1:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    clean_up_children()
    if timed_out:
        return {"ok": False, "kind": "timeout", "detail": f"timed out after {wall_s:g}s"}
    if size > cap:
        return {"ok": False, "kind": "output", "detail": "result larger than the output cap"}
    if chunks:
        return json.loads(b"".join(chunks))
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return {"ok": False, "kind": "cpu", "detail": f"killed by {signal.Signals(sig).name} (CPU time limit {cpu_seconds}s or memory)"}
        return {"ok": False, "kind": "crash", "detail": f"killed by {signal.Signals(sig).name}"}
    return {"ok": False, "kind": "crash", "detail": f"exited with status {os.waitstatus_to_exitcode(status)} without a result"}


def python_request(grade_fn, req, setup):
    cap = setup["output_cap"]

    def body():
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        sys.stdout = sys.stderr = CappedWriter(cap)
        value = grade_fn(req["sample"], req["item"])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return {"ok": False, "kind": "type", "detail": f"grade returned {type(value).__name__}, expected a float"}
        return {"ok": True, "value": float(value)}

    result = run_forked(body, setup["cpu_seconds"], setup["wall_s"], cap)
    empty_workdir()
    return result


def normalise_output(text):
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def code_request(req, setup):
    cap = setup["output_cap"]
    try:
        code_obj = compile(req["code"], "<solution>", "exec")
    except SyntaxError as exc:
        return {"ok": True, "passed": 0, "total": len(req["cases"]), "failures": ["SyntaxError: " + short_traceback(exc)]}
    passed = 0
    failures = []
    in_path = os.path.join(WORKDIR, "stdin.txt")
    out_path = os.path.join(WORKDIR, "stdout.txt")
    for index, case in enumerate(req["cases"]):
        with open(in_path, "w") as fh:
            fh.write(case.get("input", ""))

        def body(case=case):
            os.chdir(WORKDIR)
            fd_in = os.open(in_path, os.O_RDONLY)
            fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(fd_in, 0)
            os.dup2(fd_out, 1)
            os.dup2(devnull, 2)
            # Output beyond the cap fails the case (SIGXFSZ) instead of filling the disk.
            resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))
            sys.stdin = open(0, closefd=False)
            sys.stdout = open(1, "w", closefd=False)
            namespace = {"__name__": "__main__"}
            try:
                exec(code_obj, namespace)
                if "assert" in case:
                    exec(compile(case["assert"], "<test>", "exec"), namespace)
            except SystemExit as exc:
                if exc.code not in (None, 0):
                    return {"ok": False, "kind": "runtime", "detail": f"exit status {exc.code}"}
            finally:
                sys.stdout.flush()
            return {"ok": True}

        result = run_forked(body, setup["cpu_seconds"], req["timeout_s"], cap)
        ok = result.get("ok", False)
        if ok and "output" in case:
            try:
                with open(out_path, errors="replace") as fh:
                    got = fh.read(cap + 1)
            except FileNotFoundError:
                got = ""
            if normalise_output(got) != normalise_output(case["output"]):
                ok = False
                result = {"detail": "wrong output"}
        if ok:
            passed += 1
        elif len(failures) < 5:
            failures.append(f"case {index}: {result.get('detail', 'failed')}"[:DETAIL_CAP])
        # The output is compared here, in the runner, after every process of the case
        # was killed: user code never sees the expected output nor the comparison.
        empty_workdir()
    return {"ok": True, "passed": passed, "total": len(req["cases"]), "failures": failures}


def apply_self_limits(limits):
    # Only used in the operator's explicit unsafe mode, where no prlimit wrapper ran.
    for name, value in limits.items():
        res = getattr(resource, name)
        resource.setrlimit(res, (value, value))


def main():
    global WORKDIR
    setup = json.loads(sys.stdin.readline())
    if not workdir_is_disposable(setup["workdir"]):
        send({"ok": False, "detail": f"refusing to use {setup['workdir']!r} as a working dir"})
        return
    WORKDIR = setup["workdir"]
    os.chdir(WORKDIR)
    if setup.get("self_limits"):
        apply_self_limits(setup["self_limits"])
    for path in setup.get("extra_paths", []):
        sys.path.append(path)
    grade_fn = None
    if setup["mode"] == "python":
        namespace = {"__name__": "grader"}
        try:
            exec(compile(setup["source"], "<grader>", "exec"), namespace)
        except BaseException as exc:
            send({"ok": False, "detail": user_traceback(exc)})
            return
        grade_fn = namespace.get("grade")
        if not callable(grade_fn):
            send({"ok": False, "detail": "source does not define a function grade(sample, item)"})
            return
    send({"ok": True})
    for line in sys.stdin:
        req = json.loads(line)
        if setup["mode"] == "python":
            send(python_request(grade_fn, req, setup))
        else:
            send(code_request(req, setup))


main()
