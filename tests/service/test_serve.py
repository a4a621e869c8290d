"""`rft serve` as a process: torch-free API, children started and stopped with it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.server import rft, start_server


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_api_modules_do_not_import_torch():
    code = (
        "import sys, service.app, service.cli, service.routes.files, service.routes.jobs;"
        "from service.settings import Settings; from service.app import create_app;"
        "import tempfile; create_app(Settings(data_dir=tempfile.mkdtemp()));"
        "bad = [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_serve_stops_its_children_on_sigterm(tmp_path):
    server = start_server(tmp_path / "data", workers=2, inference=True)
    try:
        deadline = time.monotonic() + 30
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 3:
            kids = children_of(server.proc.pid)
            time.sleep(0.2)
        assert len(kids) == 3, "two workers and the inference process"
    finally:
        code = server.stop(timeout=60)
    assert code == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if alive(k)]


def test_keys_are_stored_hashed(tmp_path):
    data = tmp_path / "data"
    key = rft("keys", "create", "--project", "p1", "--data-dir", str(data)).strip()
    assert key.startswith("rft-")
    raw = (data / "rft.db").read_bytes()
    assert key.encode() not in raw
    listing = rft("keys", "list", "--data-dir", str(data))
    assert "p1" in listing and key not in listing
