"""Sandbox for user code (``python`` and ``code_exec`` graders).

User code never runs in the API, worker or trainer process. It runs in a child built
from util-linux tools (present on Debian; bubblewrap is not needed):

``unshare --mount --net --pid --ipc --uts --fork --kill-child`` (new namespaces; the
fresh network namespace has no interface up, so there is no network at all, loopback
included) -> ``/bin/sh`` builds a new root on a tmpfs: ``/usr`` (hence ``/bin``,
``/lib``) and the graders' site-packages bind-mounted read-only, ``nosuid,nodev``;
``/dev/{null,zero,random,urandom}``; a private size-capped tmpfs ``/work`` as the
working dir; then the root itself is remounted read-only. Nothing else of the host
is visible: no ``/etc`` (so no ``/etc/shadow``), no ``/proc``, no data dir, no database,
no home directories -> ``chroot`` -> ``prlimit`` (address space, open files, file size,
processes, no core dumps) -> ``setpriv`` (a non-root uid/gid per sandbox slot, no
supplementary groups, ``no_new_privs``, all capabilities dropped) -> ``env -i`` (an
empty environment plus a fixed ``PATH``/``HOME``/``LANG``) -> ``/usr/bin/python3 -I -S``
running ``_sandbox_runner.py``.

Inside, the runner forks one child per sample with its own CPU-time limit and kills
every other process in the sandbox after each sample (it is PID 1 of the namespace, so
user code cannot kill it, and everything dies with it). The host enforces the
wall-clock limit: on timeout it SIGKILLs the sandbox's process group; the kernel then
kills the whole PID namespace. Replies are read with a 1 MiB cap. The host re-checks
every value: only finite numbers count, clamped to the grader's range.

RLIMIT_NPROC is counted per real uid across the host and ignored for root, which is why
each slot gets its own non-root uid (``GraderContext.sandbox_uid_base + slot``).
No cgroups: the machine runs cgroup v1 and the limits above are per process, so a
sample may use up to ``sandbox_max_processes`` times the memory cap in the worst case.

Packages available to graders: the Python standard library of ``/usr/bin/python3``
(3.11) plus the packages installed with this service, mounted read-only: numpy, scipy,
sympy, pandas, rapidfuzz, rouge-score, nltk (no corpora), sacrebleu, jsonschema,
pydantic, pyyaml, regex, math-verify. (torch and transformers are importable too, but the
memory cap makes them impractical.) No network, so nothing can be pip-installed.

When the sandbox cannot be built (not root, no ``unshare``, a kernel without
namespaces) user code is refused with ``python_grader_server_error`` unless the
operator set ``GraderContext.sandbox_unsafe``; then the runner starts as a plain child
in a fresh ``rft-unsafe-grader-*`` temp dir (the only directory it will ever empty),
with an empty environment and self-applied rlimits, and a warning is logged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from graders.base import GraderContext, SampleError

logger = logging.getLogger(__name__)

OUTPUT_CAP = 1024 * 1024
SYSTEM_PYTHON = "/usr/bin/python3"
_RUNNER_SOURCE = (Path(__file__).with_name("_sandbox_runner.py")).read_text()
# Time allowed for the sandbox to start (without user code to load).
SETUP_TIMEOUT_S = 15.0

# Built as root inside the new mount namespace: $1 = site-packages dir, $2 = tmpfs MiB.
# Everything after them is the command to exec in the new root.
_SETUP_SCRIPT = r"""
set -e
# Stage the site-packages first: the new root's tmpfs goes over /tmp, which would hide a
# virtual environment that lives under /tmp. (All of this is in the private mount
# namespace; the host's /mnt and /tmp are untouched.)
mount --bind "$1" /mnt
R=/tmp
mount -t tmpfs -o size=1m,mode=755,nosuid,nodev rftsandbox "$R"
mkdir -p "$R/usr" "$R/opt/site" "$R/dev" "$R/work" "$R/etc"
ln -s usr/bin "$R/bin"; ln -s usr/lib "$R/lib"; ln -s usr/sbin "$R/sbin"
if [ -d /usr/lib64 ]; then ln -s usr/lib64 "$R/lib64"; fi
mount --bind -o ro,nosuid,nodev /usr "$R/usr"
mount --bind -o ro,nosuid,nodev /mnt "$R/opt/site"
if [ -f /etc/ld.so.cache ]; then touch "$R/etc/ld.so.cache"; mount --bind -o ro /etc/ld.so.cache "$R/etc/ld.so.cache"; fi
for d in null zero urandom random; do touch "$R/dev/$d"; mount --bind /dev/$d "$R/dev/$d"; done
mount -t tmpfs -o "size=$2m,mode=1777,nosuid,nodev" rftwork "$R/work"
mount -o remount,bind,ro "$R"
shift 2
exec /usr/sbin/chroot "$R" "$@"
"""


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def _sandbox_command(ctx: GraderContext, slot: int) -> list[str]:
    uid = ctx.sandbox_uid_base + slot
    mem = ctx.sandbox_memory_mb * 1024 * 1024
    fsize = ctx.sandbox_max_file_mb * 1024 * 1024
    return [
        "unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
        "/bin/sh", "-c", _SETUP_SCRIPT, "rft-sandbox", _site_packages(), str(ctx.sandbox_max_file_mb),
        "/usr/bin/prlimit", f"--as={mem}", f"--nofile={ctx.sandbox_max_open_files}", f"--fsize={fsize}",
        f"--nproc={ctx.sandbox_max_processes}", "--core=0",
        "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs",
        "--inh-caps=-all", "--bounding-set=-all",
        "/usr/bin/env", "-i", "PATH=/usr/bin", "HOME=/work", "LANG=C.UTF-8", "OPENBLAS_NUM_THREADS=1",
        "OMP_NUM_THREADS=1", "PYTHONDONTWRITEBYTECODE=1",
        SYSTEM_PYTHON, "-I", "-S", "-c", _RUNNER_SOURCE,
    ]  # fmt: skip


def _unsafe_command() -> list[str]:
    python = SYSTEM_PYTHON if os.access(SYSTEM_PYTHON, os.X_OK) else os.path.realpath(sys.executable)
    return [python, "-I", "-S", "-c", _RUNNER_SOURCE]


@functools.lru_cache(maxsize=1)
def sandbox_status() -> tuple[bool, str]:
    """(available, reason): whether the namespace sandbox can be built here (probed once)."""
    if os.geteuid() != 0:
        return False, "the sandbox needs root to create namespaces and drop to a sandbox uid"
    for tool in ("unshare", "/usr/bin/prlimit", "/usr/bin/setpriv", "/usr/sbin/chroot", SYSTEM_PYTHON):
        if shutil.which(tool) is None:
            return False, f"{tool} is not installed"
    try:
        box = Sandbox(GraderContext(), slot=0, mode="python", source="def grade(s, i):\n    return 0.5\n")
        try:
            reply = box.request({"sample": {}, "item": {}}, timeout_s=SETUP_TIMEOUT_S)
        finally:
            box.close()
    except SampleError as exc:
        return False, f"sandbox probe failed: {exc.detail}"
    if reply.get("value") != 0.5:
        return False, f"sandbox probe answered {reply!r}"
    return True, "namespaces + read-only root + tmpfs + rlimits + non-root uid + no_new_privs"


def require_sandbox(ctx: GraderContext) -> bool:
    """True to use the real sandbox, False for the operator's unsafe mode; raises
    ``SampleError('python_grader_server_error')`` when neither is allowed."""
    ok, reason = sandbox_status()
    if ok:
        return True
    if ctx.sandbox_unsafe:
        logger.warning("running user grader code WITHOUT a sandbox (sandbox_unsafe is set): %s", reason)
        return False
    raise SampleError(
        "python_grader_server_error",
        f"refusing to run user code: the sandbox cannot be set up on this machine ({reason}); "
        "an operator may set sandbox_unsafe to run it anyway",
    )


class Sandbox:
    """One warm sandboxed interpreter that grades many samples of one grader.

    Not thread-safe: a ``SandboxPool`` hands each one to a single thread at a time.
    """

    def __init__(self, ctx: GraderContext, slot: int, mode: str, source: str | None, safe: bool = True):
        self.ctx = ctx
        self.safe = safe
        self._workdir: str | None = None
        if safe:
            cmd = _sandbox_command(ctx, slot)
            cwd = "/"
            workdir = "/work"
        else:
            # A dedicated, fresh dir: the runner empties its working dir between samples.
            self._workdir = tempfile.mkdtemp(prefix="rft-unsafe-grader-")
            cmd = _unsafe_command()
            cwd = workdir = self._workdir
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"} if safe else {},
            cwd=cwd,
            start_new_session=True,
        )
        self._buffer = b""
        setup: dict[str, Any] = {
            "mode": mode,
            "source": source,
            "workdir": workdir,
            "cpu_seconds": ctx.sandbox_cpu_seconds,
            "wall_s": ctx.sandbox_wall_timeout_s,
            "output_cap": OUTPUT_CAP,
            "extra_paths": ["/opt/site"] if safe else [_site_packages()],
            "self_limits": None
            if safe
            else {
                "RLIMIT_AS": ctx.sandbox_memory_mb * 1024 * 1024,
                "RLIMIT_NOFILE": ctx.sandbox_max_open_files,
                "RLIMIT_FSIZE": ctx.sandbox_max_file_mb * 1024 * 1024,
                "RLIMIT_CORE": 0,
            },
        }
        # Loading the user's module runs their top-level code: it gets the per-sample limit.
        reply = self._exchange(setup, SETUP_TIMEOUT_S if source is None else ctx.sandbox_wall_timeout_s + 5)
        if not reply.get("ok"):
            self.close()
            raise SampleError("python_grader_runtime_error", f"grader failed to load: {reply.get('detail')}")

    @property
    def alive(self) -> bool:
        """False once the process has exited or been killed."""
        return self.proc.poll() is None

    def _exchange(self, obj: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self.close()
            raise SampleError("python_grader_server_error", "the sandbox exited unexpectedly") from None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise SampleError("python_grader_runtime_error", f"timed out after {timeout_s:g}s (sandbox killed)")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.close()
                raise SampleError("python_grader_server_error", "the sandbox exited unexpectedly")
            self._buffer += chunk
            if len(self._buffer) > OUTPUT_CAP + 4096 and b"\n" not in self._buffer:
                self.close()
                raise SampleError("python_grader_runtime_error", "sandbox output exceeded the 1 MiB cap")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            self.close()
            raise SampleError("python_grader_server_error", "the sandbox answered garbage") from None
        if not isinstance(reply, dict):
            self.close()
            raise SampleError("python_grader_server_error", "the sandbox answered garbage")
        return reply

    def request(self, obj: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Send one request and return the runner's reply (raises ``SampleError``)."""
        if not self.alive:
            raise SampleError("python_grader_server_error", "the sandbox is not running")
        # The runner enforces the per-sample wall limit itself and stays warm; this outer
        # limit only catches a wedged runner and kills the whole sandbox.
        return self._exchange(obj, timeout_s if timeout_s is not None else self.ctx.sandbox_wall_timeout_s * 2 + 5)

    def close(self) -> None:
        """Kill the sandbox and everything in it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("sandbox process %d did not exit after SIGKILL", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


class SandboxPool:
    """Up to ``size`` warm sandboxes for one grader; ``run`` is thread-safe.

    A sandbox that died (timeout, crash) is replaced on the next request. A grader whose
    module fails to load fails every request with the same error, without respawning.
    """

    def __init__(self, ctx: GraderContext, mode: str, source: str | None, size: int):
        self.ctx = ctx
        self.mode = mode
        self.source = source
        self.safe = require_sandbox(ctx)
        self._free: Queue[int] = Queue()
        for slot in range(size):
            self._free.put(slot)
        self._boxes: dict[int, Sandbox] = {}
        self._load_error: SampleError | None = None
        self._lock = threading.Lock()

    def run(self, obj: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Run one request on a free sandbox (starting it if needed)."""
        if self._load_error is not None:
            raise self._load_error
        slot = self._free.get()
        try:
            box = self._boxes.get(slot)
            if box is None or not box.alive:
                try:
                    box = Sandbox(self.ctx, slot, self.mode, self.source, safe=self.safe)
                except SampleError as exc:
                    if exc.flag == "python_grader_runtime_error":
                        with self._lock:
                            self._load_error = exc
                    raise
                self._boxes[slot] = box
            return box.request(obj, timeout_s)
        finally:
            self._free.put(slot)

    def close(self) -> None:
        """Kill every sandbox of the pool."""
        while True:
            try:
                self._free.get_nowait()
            except Empty:
                break
        for box in self._boxes.values():
            box.close()
        self._boxes.clear()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_isolated(
    ctx: GraderContext, mode: str, source: str | None, request: dict[str, Any], timeout_s: float | None = None
) -> dict[str, Any]:
    """One fresh sandbox for one request (the one-process-per-sample baseline)."""
    safe = require_sandbox(ctx)
    box = Sandbox(ctx, 0, mode, source, safe=safe)
    try:
        return box.request(request, timeout_s)
    finally:
        box.close()
