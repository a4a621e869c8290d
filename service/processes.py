"""Starting, watching and stopping the engine's processes (worker, inference) from the CLI.

They are started by module path in fresh interpreters, never imported here, so the
API process stays free of torch. On Linux each child is told to die with its parent
(``PR_SET_PDEATHSIG``), so even a SIGKILL of ``rft serve`` leaves no orphans.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping

from jobs.procutil import die_with_parent

log = logging.getLogger(__name__)


def spawn_module(module: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
    """Start ``python -m module args...`` with ``env`` added to this environment."""
    full_env = {**os.environ, **env}
    # SIGTERM rather than SIGKILL: a worker orphaned this way still hands its job back.
    preexec = functools.partial(die_with_parent, signal.SIGTERM)
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=full_env, preexec_fn=preexec)
    log.info("started %s (pid %d)", module, proc.pid)
    return proc


def stop_all(procs: list[subprocess.Popen], grace_seconds: float = 15.0) -> None:
    """SIGTERM every child, wait up to ``grace_seconds``, then SIGKILL what is left."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in time; killing it", proc.pid)
            proc.kill()
            proc.wait()


# Restart backoff: doubling from 1 s up to a minute for a child that keeps dying at
# start; a child that ran this long was healthy, and its next restart starts over at 1 s
# (a worker killed again and again mid-job must not come back a minute late each time).
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
HEALTHY_RUN_S = 60.0


def next_backoff(previous: float, ran_seconds: float) -> float:
    """Seconds to wait before restarting a child that ran ``ran_seconds`` and whose last
    wait was ``previous`` (0 before its first restart)."""
    if previous <= 0 or ran_seconds >= HEALTHY_RUN_S:
        return FIRST_BACKOFF_S
    return min(previous * 2, MAX_BACKOFF_S)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Supervisor:
    """Keeps the engine's children running: one that dies unasked is started again.

    A worker killed by the OOM killer or by hand comes back; the job it held is re-leased
    once its lease expires (jobs/queue.py). Restarts back off so a child that crashes at
    start does not spin.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self._specs: list[tuple[str, list[str]]] = []
        self.procs: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self, module: str, args: list[str]) -> None:
        """Start ``module`` now and keep it running."""
        self._specs.append((module, args))
        self.procs.append(spawn_module(module, args, self.env))

    def watch(self) -> None:
        """Begin restarting children that exit."""
        self._thread.start()

    def _watch(self) -> None:
        backoff = [0.0] * len(self._specs)
        started = [time.monotonic()] * len(self._specs)
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is None or self._stopping.is_set():
                    continue
                module, args = self._specs[i]
                backoff[i] = next_backoff(backoff[i], time.monotonic() - started[i])
                log.warning("%s (pid %d) exited with %s; restarting in %.0f s", module, proc.pid, proc.returncode, backoff[i])
                if self._stopping.wait(backoff[i]):
                    return
                self.procs[i] = spawn_module(module, args, self.env)
                started[i] = time.monotonic()

    def stop(self) -> None:
        """Stop watching, then stop every child."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        stop_all(self.procs)
