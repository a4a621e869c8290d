"""No Docker engine runs here, so check what the Dockerfile relies on instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


def test_runtime_has_data_volume_and_healthcheck():
    # Root in the container (the sandbox needs it); user code runs as the sandbox uids.
    assert not instructions("USER")
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


# --- the sandbox under the documented `docker run` line ------------------------------
# No engine runs here, so the service's own check runs as the container would run it:
# root, with the capability bounding set the run line leaves (--cap-drop ALL, then the
# --cap-add list) and no_new_privs.

def documented_caps() -> list[str]:
    run_line = re.sub(r"\\\n#\s*", " ", DOCKERFILE).split("# Run:", 1)[1].split("\n", 1)[0]
    assert "--cap-drop ALL" in run_line and "--security-opt no-new-privileges" in run_line
    return re.findall(r"--cap-add (\w+)", run_line)


def test_documented_caps_are_what_the_sandbox_needs():
    from graders.sandbox import CONTAINER_CAPS

    assert sorted(documented_caps()) == sorted(CONTAINER_CAPS)


def sandbox_check(*setpriv_args: str) -> subprocess.CompletedProcess:
    rft = Path(sys.executable).with_name("rft")
    return subprocess.run(
        ["setpriv", *setpriv_args, "--inh-caps=-all", "--no-new-privs", str(rft), "sandbox-check"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to drop to the container's capabilities")


@needs_root
def test_sandbox_runs_with_exactly_the_documented_caps(tmp_path):
    caps = ",".join(["-all"] + [f"+{c.lower()}" for c in documented_caps()])
    out = sandbox_check(f"--bounding-set={caps}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["user_code"] == "sandboxed"


@needs_root
@pytest.mark.parametrize("missing", ["SYS_ADMIN", "SYS_CHROOT", "SETUID"])
def test_sandbox_refused_with_a_reason_when_a_cap_is_missing(missing):
    caps = ",".join(["-all"] + [f"+{c.lower()}" for c in documented_caps() if c != missing])
    out = sandbox_check(f"--bounding-set={caps}")
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["user_code"] == "refused", report
    assert report["reason"].startswith("sandbox probe failed")


def test_sandbox_refused_for_a_non_root_user(monkeypatch, capsys):
    # In-process (the checkout need not be readable by another uid): the same command,
    # with the process seen as uid 10001.
    from graders import sandbox
    from service import cli

    monkeypatch.setattr(sandbox, "_probe", None)
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 10001)
    assert cli.main(["sandbox-check"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["user_code"] == "refused" and "needs root" in report["reason"], report
