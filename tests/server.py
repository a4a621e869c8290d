"""A real ``rft serve`` in a child process, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rft(*args: str, env: dict | None = None) -> str:
    """Run the ``rft`` CLI (``python -m service.cli``) and return its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"rft {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout


@dataclass
class Server:
    """A running service: its URL, data dir and one API key per project asked for."""

    data_dir: Path
    port: int
    proc: subprocess.Popen
    env: dict = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def key(self, project: str = "default") -> str:
        if project not in self.keys:
            self.keys[project] = rft(
                "keys", "create", "--project", project, "--data-dir", str(self.data_dir), env=self.env
            ).strip()
        return self.keys[project]

    def client(self, project: str = "default", **kwargs):
        """The official openai client pointed at this server."""
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=self.key(project), max_retries=0, **kwargs)

    def http(self, project: str | None = "default") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key(project)}"} if project else {}
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=60)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(data_dir: Path, *, workers: int = 0, inference: bool = False, env: dict | None = None,
                 ready_timeout: float = 120) -> Server:
    """Start ``rft serve`` on a free loopback port and wait until /healthz answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--workers", str(workers)]
    if not inference:
        args.append("--no-inference")
    full_env = {**os.environ, **(env or {})}
    log = open(data_dir.parent / f"serve-{port}.log", "ab")
    proc = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rft serve exited with {proc.returncode}; see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return Server(data_dir=data_dir, port=port, proc=proc, env=env or {})
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("rft serve did not become healthy in time")
