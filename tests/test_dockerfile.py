"""No Docker engine runs here, so check what the Dockerfile relies on instead."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_copied_sources_exist():
    for args in instructions("COPY"):
        if args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def test_entrypoint_is_the_rft_console_script_serving():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(instructions("ENTRYPOINT")[-1]) == ["rft"]
    assert json.loads(instructions("CMD")[-1]) == ["serve"]
    module, func = scripts["rft"].split(":")
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}(['serve', '--help']))"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and "--data-dir" in out.stdout


def test_runtime_is_non_root_with_data_volume_and_healthcheck():
    assert instructions("USER")[-1] == "rft"
    assert "/data" in instructions("VOLUME")[-1]
    assert "/healthz" in instructions("HEALTHCHECK")[-1]
    assert "RFT_DATA_DIR=/data" in " ".join(instructions("ENV"))


def test_settings_read_the_environment_the_image_sets(monkeypatch, tmp_path):
    from service.settings import Settings

    monkeypatch.setenv("RFT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RFT_HOST", "0.0.0.0")
    monkeypatch.setenv("RFT_PORT", "8000")
    settings = Settings()
    assert (settings.data_dir, settings.host, settings.port) == (tmp_path.resolve(), "0.0.0.0", 8000)
