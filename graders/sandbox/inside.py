"""The supervisor that runs *inside* the sandbox (stdlib only; passed to the interpreter
with ``-c``, so no file of this project needs to be visible in there).

It is PID 1 of the sandbox's PID namespace and runs as root with only the capabilities
it needs (setuid, setgid, kill, sys_admin for the per-sample namespaces). It never runs
user code itself: every sample (and the grader's top level, and the load check) runs in
a forked child that first gets a fresh mount, IPC and network namespace with an empty
``/work`` tmpfs, then drops to the sandbox's own non-root uid. That uid differs from the
supervisor's, so user code can neither signal, trace nor write into it; what a sample
writes into its own copy of memory dies with it, and the next sample is forked from the
untouched supervisor. After every sample all other processes of the namespace are
killed and reaped, so the sample's processes, SysV IPC objects, in-memory files and
``/work`` are gone before the next one starts. Each sample also gets its own network
namespace (an abstract Unix socket whose file is left in flight outlives its process
until the kernel's garbage collector runs, and would be seen by the next sample) and a
seccomp filter that refuses the kernel keyring calls (``add_key``, ``request_key``,
``keyctl``): keyrings belong to the uid and outlive every process, so they would carry
data to the next sample and to the next sandbox leasing the uid, another tenant's.

Protocol on stdin/stdout, one JSON object per line:

1. setup ``{"mode": "python"|"code", "source": str|null, "uid": int, "cpu_seconds": int,
   "wall_s": float, "output_cap": int, "max_processes": int, "work_mb": int,
   "extra_paths": [...], "preload": [module names], "isolate": bool}``
   -> ``{"ok": true}`` or ``{"ok": false, "detail": ...}`` (grader fails to load).
2. requests, one per sample:
   - python: ``{"sample": ..., "item": ...}`` -> ``{"ok": true, "value": <number>}`` or
     ``{"ok": false, "kind": ..., "detail": ...}``
   - code: ``{"code": str, "cases": [{"stdin": str} | {"exprs": [str, ...]}],
     "timeout_s": float}`` -> ``{"ok": true, "cases": [{"status": ..., "detail": ...,
     "stdout": str, "values": [...]}, ...]}``. The supervisor never sees an expected
     output: it only reports what the solution printed or the tagged values of the
     expressions the host asked for, and the host judges them.

``isolate`` is false only in the operator's unsafe mode (no namespaces, no root): the
children then skip the namespace and uid steps and run in a fresh temp dir.
"""

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback

DETAIL_CAP = 2000
REPLY_BUDGET = 4 * 1024 * 1024
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 2
MS_NODEV = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
# machine -> (AUDIT_ARCH_*, syscall numbers of add_key, request_key, keyctl).
KEYRING_SYSCALLS = {"x86_64": (0xC000003E, (248, 249, 250)), "aarch64": (0xC00000B7, (217, 218, 219))}
LIBC = ctypes.CDLL(None, use_errno=True)
SETUP = {}
# Requests from the host. Not ``sys.stdin``: a sample replaces that, and the old object
# would close fd 0 when collected.
HOST_IN = os.fdopen(0, "rb", buffering=65536)


def send(obj):
    sys.__stdout__.write(json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def short_traceback(exc):
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-DETAIL_CAP:]


def user_traceback(exc):
    # Only the frames of the user's code: the harness's own frames are noise to them.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in ("<grader>", "<solution>", "<test>")]
    return ("".join(traceback.format_list(frames)) + short_traceback(exc)).strip()[-DETAIL_CAP:]


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def keyring_filter():
    """A seccomp program: the keyring calls, any other ABI (i386, x32, arm32) -> ENOSYS,
    as on a kernel without keys; everything else allowed."""
    machine = os.uname().machine
    if machine not in KEYRING_SYSCALLS:
        raise OSError(f"no seccomp filter for the kernel keyring calls on {machine}")
    arch, numbers = KEYRING_SYSCALLS[machine]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_JMP|JGE|K, BPF_RET|K
    allow, deny = 0x7FFF0000, 0x00050000 | 38  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | ENOSYS
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, deny), (ld, 0, 0, 0)]
    tests = [(jge, 0x40000000)] + [(jeq, nr) for nr in numbers]  # x32 numbers first
    for index, (op, k) in enumerate(tests):
        prog.append((op, len(tests) - index, 0, k))  # true: jump to the final deny
    prog += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    return (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])


def check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class Discard:
    """A text stream that drops what a grader prints (nobody reads it)."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def enter_sample_jail(workdir, stdin_data):
    """In a freshly forked child: private namespaces, empty /work, limits, sandbox uid.

    Runs as root, before any user code; after it returns the process holds no
    capability and cannot get one back (no_new_privs, nosuid mounts). In the unsafe
    mode ``workdir`` is a fresh temp dir the supervisor made and removes afterwards.
    """
    uid = SETUP["uid"]
    if SETUP["isolate"]:
        check(LIBC.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET), "unshare")
        options = f"size={SETUP['work_mb']}m,mode=0700,uid={uid},gid={uid}".encode()
        check(LIBC.mount(b"rftwork", b"/work", b"tmpfs", MS_NOSUID | MS_NODEV, options), "mount /work")
    else:
        os.setpgid(0, 0)
        for name, value in SETUP["self_limits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
    cpu = SETUP["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    if SETUP["isolate"]:
        nproc = SETUP["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if SETUP["isolate"]:
        program = keyring_filter()
        fprog = SockFprog(len(program), program)
        check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
    # From here on the process is the sample's: /work is its own (mode 0700).
    os.chdir(workdir)
    stdin_fd = os.open(os.devnull, os.O_RDONLY)
    if stdin_data is not None:
        path = os.path.join(workdir, ".stdin")
        with open(path, "w") as fh:
            fh.write(stdin_data)
        stdin_fd = os.open(path, os.O_RDONLY)
        os.unlink(path)
    os.dup2(stdin_fd, 0)
    return workdir


def run_child(body, stdin_data, timeout_s, want_stdout, cap=None):
    """Fork a jailed child running ``body()`` (returns a JSON-able dict, written to fd 3);
    wait at most ``timeout_s``; kill everything else in the sandbox; return
    ``(result dict or None, stdout bytes, status)`` with status "ok", "timeout",
    "output" (more than the cap), "crash" or "cpu"."""
    cap = cap or SETUP["output_cap"]
    workdir = "/work" if SETUP["isolate"] else tempfile.mkdtemp(prefix="rft-unsafe-grader-")
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe() if want_stdout else (None, None)
    pid = os.fork()
    if pid == 0:
        result_fd = res_w
        try:
            os.close(res_r)
            if out_r is not None:
                os.close(out_r)
            enter_sample_jail(workdir, stdin_data)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(out_w if out_w is not None else devnull, 1)
            os.dup2(devnull, 2)
            os.dup2(res_w, 3)
            result_fd = 3
            os.closerange(4, 1 << 16)
            result = body()
        except BaseException as exc:  # noqa: BLE001 - everything is reported
            result = {"ok": False, "kind": "runtime", "detail": user_traceback(exc) or short_traceback(exc)}
        try:
            data = (json.dumps(result) + "\n").encode()
        except (TypeError, ValueError) as exc:
            data = (json.dumps({"ok": False, "kind": "type", "detail": short_traceback(exc)}) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(result_fd, view):]
        except OSError:
            pass
        os._exit(0)
    os.close(res_w)
    if out_w is not None:
        os.close(out_w)
    pidfd = os.pidfd_open(pid)
    bufs = {res_r: bytearray(), out_r: bytearray()}
    open_fds = [fd for fd in (res_r, out_r) if fd is not None]
    deadline = time.monotonic() + timeout_s
    status = "ok"
    child_done = False
    watch_host = True
    while open_fds and status == "ok":
        left = deadline - time.monotonic()
        if left <= 0:
            status = "timeout"
            break
        watch = open_fds + ([] if child_done else [pidfd]) + ([0] if watch_host else [])
        ready, _, _ = select.select(watch, [], [], left)
        for fd in ready:
            if fd == 0:
                if not HOST_IN.peek(1):
                    # The host went away: nothing is left to grade for.
                    kill_all(pid)
                    os._exit(0)
                watch_host = False
            elif fd == pidfd:
                child_done = True
                # The main process is gone; whatever it left running dies now, so the
                # pipes reach EOF once their buffers are drained.
                kill_all(pid)
            else:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.remove(fd)
                    continue
                bufs[fd] += chunk
                if len(bufs[fd]) > cap:
                    status = "output"
    kill_all(pid)
    _, wait_status = os.waitpid(pid, 0)
    reap_all()
    for fd in (res_r, out_r, pidfd):
        if fd is not None:
            os.close(fd)
    if not SETUP["isolate"]:
        shutil.rmtree(workdir, ignore_errors=True)
    if status == "ok" and os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if not bufs[res_r]:
            status = "cpu" if sig in (signal.SIGXCPU, signal.SIGKILL) else "crash"
    result = None
    line = bytes(bufs[res_r]).split(b"\n", 1)[0]
    if status == "ok" and line:
        try:
            result = json.loads(line)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            result = None
    stdout = bytes(bufs[out_r]) if out_r is not None else b""
    return result, stdout, status, wait_status


def kill_all(pid):
    """SIGKILL every other process of the sandbox (we are PID 1 of its namespace); in
    the unsafe mode, the sample's process group."""
    try:
        if SETUP["isolate"]:
            os.kill(-1, signal.SIGKILL)
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap_all():
    """Wait for every child: they are all dead or dying after ``kill_all``."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def failure(status, wait_status, timeout_s):
    if status == "timeout":
        return {"ok": False, "kind": "timeout", "detail": f"timed out after {timeout_s:g}s"}
    if status == "output":
        return {"ok": False, "kind": "output", "detail": "output larger than the output cap"}
    if os.WIFSIGNALED(wait_status):
        sig = signal.Signals(os.WTERMSIG(wait_status)).name
        if status == "cpu":
            return {"ok": False, "kind": "cpu", "detail": f"killed by {sig} (CPU time limit {SETUP['cpu_seconds']}s or memory)"}
        return {"ok": False, "kind": "crash", "detail": f"killed by {sig}"}
    return {"ok": False, "kind": "crash", "detail": f"exited with status {os.waitstatus_to_exitcode(wait_status)} without a result"}


def load_grader(code_obj):
    """Run the grader's top level (in a jailed child) and return its ``grade``."""
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    exec(code_obj, namespace)
    grade_fn = namespace.get("grade")
    if not callable(grade_fn):
        raise TypeError("source does not define a function grade(sample, item)")
    return grade_fn


def python_request(code_obj, req):
    def body():
        sys.stdout = sys.stderr = Discard()
        value = load_grader(code_obj)(req["sample"], req["item"])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return {"ok": False, "kind": "type", "detail": f"grade returned {type(value).__name__}, expected a float"}
        return {"ok": True, "value": float(value)}

    result, _, status, wait_status = run_child(body, None, SETUP["wall_s"], False)
    if result is None:
        return failure(status, wait_status, SETUP["wall_s"])
    return result


# --- code_exec: the harness inside the solution's process --------------------------

def encode(value, depth=0):
    """A tagged, type-preserving JSON form of a plain builtin value. Anything that is not
    exactly a builtin type (a subclass, an object with its own ``__eq__``) is refused:
    the host compares the decoded values, never the solution's objects."""
    if depth > 64:
        raise ValueError("value nested deeper than 64 levels")
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["b", value]
    if kind is int:
        return ["i", str(value)]
    if kind is float:
        return ["f", repr(value)]
    if kind is complex:
        return ["c", repr(value.real), repr(value.imag)]
    if kind is str:
        return ["s", value]
    if kind is bytes:
        return ["y", value.hex()]
    if kind in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[kind]
        return [tag, [encode(v, depth + 1) for v in value]]
    if kind is dict:
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    raise TypeError(f"returned a {kind.__name__}; only plain builtin values (numbers, strings, "
                    "lists, tuples, dicts, sets, None) can be checked")


def code_case(code, case, timeout_s, cap):
    exprs = case.get("exprs")

    def body():
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        namespace = {"__name__": "__main__" if exprs is None else "solution", "__builtins__": __builtins__}
        try:
            exec(compile(code, "<solution>", "exec"), namespace)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                return {"ok": False, "kind": "runtime", "detail": f"exit status {exc.code}"}
        finally:
            sys.stdout.flush()
        if exprs is None:
            return {"ok": True}
        values = []
        for text in exprs:
            values.append(encode(eval(compile(text, "<test>", "eval"), namespace)))
        sys.stdout.flush()
        return {"ok": True, "values": values}

    result, stdout, status, wait_status = run_child(body, case.get("stdin", ""), timeout_s, exprs is None, cap)
    if result is None:
        out = failure(status, wait_status, timeout_s)
    elif not result.get("ok"):
        out = {"ok": False, "kind": result.get("kind", "runtime"), "detail": str(result.get("detail", ""))[:DETAIL_CAP]}
    else:
        out = {"ok": True}
        if exprs is not None:
            out["values"] = result.get("values")
    if exprs is None and out["ok"]:
        out["stdout"] = stdout.decode("utf-8", errors="replace")
    return out


def code_request(req):
    try:
        compile(req["code"], "<solution>", "exec")
    except SyntaxError as exc:
        bad = {"ok": False, "kind": "syntax", "detail": "SyntaxError: " + short_traceback(exc)}
        return {"ok": True, "cases": [bad] * len(req["cases"])}
    except (ValueError, RecursionError, MemoryError) as exc:
        bad = {"ok": False, "kind": "syntax", "detail": short_traceback(exc)}
        return {"ok": True, "cases": [bad] * len(req["cases"])}
    # One reply carries every case's output: together at most REPLY_BUDGET bytes (the
    # host reads replies with a matching cap), and never less than 64 KiB per case.
    cap = min(SETUP["output_cap"], max(65536, REPLY_BUDGET // max(1, len(req["cases"]))))
    return {"ok": True, "cases": [code_case(req["code"], case, req["timeout_s"], cap) for case in req["cases"]]}


def preload(names):
    # Heavy, well-known packages the grader imports are imported here once (by name, from
    # the read-only package dirs; no user code runs) so each forked sample starts fast.
    for name in names:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - the sample's own import reports the error
            pass


def main():
    global SETUP
    SETUP = json.loads(HOST_IN.readline())
    for path in SETUP.get("extra_paths", []):
        sys.path.append(path)
    code_obj = None
    if SETUP["mode"] == "python":
        try:
            code_obj = compile(SETUP["source"], "<grader>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            send({"ok": False, "detail": short_traceback(exc)})
            return
        preload(SETUP.get("preload", []))

        def body():
            sys.stdout = sys.stderr = Discard()
            load_grader(code_obj)
            return {"ok": True}

        result, _, status, wait_status = run_child(body, None, SETUP["wall_s"], False)
        if result is None:
            result = failure(status, wait_status, SETUP["wall_s"])
        if not result.get("ok"):
            send({"ok": False, "detail": result.get("detail", "")})
            return
    send({"ok": True})
    while True:
        line = HOST_IN.readline()
        if not line:
            return
        req = json.loads(line)
        send(python_request(code_obj, req) if SETUP["mode"] == "python" else code_request(req))
        del req


if __name__ == "__main__":
    main()
