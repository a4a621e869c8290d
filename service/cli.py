"""The ``rft`` command: serve, worker, keys, demo-model, sandbox-check.

``rft serve`` runs the API under uvicorn and starts the worker(s) and the inference
process as children; SIGINT or SIGTERM stops them all.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from service.settings import Settings

log = logging.getLogger("rft")

DEMO_MODEL_NAME = "rft-demo-tiny"


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    for name in ("host", "port", "data_dir", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_inference", False):
        overrides["start_inference"] = False
    return Settings(**overrides)


def engine_env(settings: Settings) -> dict[str, str]:
    """Environment for engine processes: where the data lives and how to reach the service."""
    from service.grading import grader_context

    env = {
        "RFT_DATA_DIR": str(settings.data_dir),
        "RFT_DATABASE_URL": settings.resolved_database_url,
        "RFT_MODELS_DIR": str(settings.resolved_models_dir),
        "RFT_LEASE_SECONDS": str(settings.lease_seconds),
        "RFT_MAX_ATTEMPTS": str(settings.max_attempts),
        "RFT_GRADER_CONTEXT": json.dumps(grader_context(settings)),
        "RFT_ALLOW_LOCAL_MODEL_PATHS": "true" if settings.allow_local_model_paths else "false",
        "RFT_ALLOW_HUB_MODELS": "true" if settings.allow_hub_models else "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if settings.internal_token:
        env["RFT_INTERNAL_TOKEN"] = settings.internal_token
    return env


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising the stop signal after its graceful shutdown.

    uvicorn re-raises SIGINT/SIGTERM once it has shut down, which would kill this process
    before it stops its children; here the signal just ends ``run()``.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


def cmd_serve(args: argparse.Namespace) -> int:
    from service.app import create_app
    from service.processes import Supervisor, free_port

    settings = _settings(args)
    updates: dict = {"internal_token": settings.internal_token or secrets.token_urlsafe(24)}
    if settings.start_inference:
        port = settings.inference_port or free_port()
        updates.update(inference_port=port, inference_url=f"http://127.0.0.1:{port}")
    settings = settings.model_copy(update=updates)
    app = create_app(settings)  # creates the data dir and migrates before children start
    _log_sandbox(settings)

    supervisor = Supervisor(engine_env(settings))
    try:
        for _ in range(settings.workers):
            supervisor.start("jobs.worker", [])
        if settings.start_inference:
            supervisor.start("jobs.inference", ["--host", "127.0.0.1", "--port", str(settings.inference_port)])
        supervisor.watch()
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info")
        _Server(config).run()  # returns after SIGINT / SIGTERM
    finally:
        supervisor.stop()
    return 0


def _sandbox_report(settings: Settings) -> dict:
    from graders.sandbox import sandbox_report
    from service.grading import build_grader_context

    return sandbox_report(build_grader_context(settings))


def _log_sandbox(settings: Settings) -> None:
    report = _sandbox_report(settings)
    if report["user_code"] == "sandboxed":
        log.info("user code runs sandboxed; memory cap: %s", report["memory_cap"])
    else:
        log.warning("python and code_exec graders: %s (%s)", report["user_code"], report["reason"])


def cmd_sandbox_check(args: argparse.Namespace) -> int:
    """Print whether user code can run sandboxed here; exit 1 when it cannot."""
    report = _sandbox_report(_settings(args))
    print(json.dumps(report, indent=2))  # noqa: T201 - the report is the output
    return 0 if report["user_code"] == "sandboxed" else 1


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.ensure_dirs()
    from jobs.store import Store

    Store(settings.resolved_database_url).migrate()
    os.environ.update(engine_env(settings))
    # Replace this process: the worker is the engine's code, started by module path.
    os.execv(sys.executable, [sys.executable, "-m", "jobs.worker"])
    return 0  # not reached


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds in ``30d``, ``12h``, ``90m`` or ``45s`` (argparse type)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30d, 12h, 90m or 45s")
    return int(match[1]) * _DURATION_UNITS[match[2]]


def parse_instant(text: str) -> float:
    """Unix time of an ISO 8601 date or date-time (argparse type); UTC unless it says."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time such as 2027-01-06 or 2027-01-06T12:00:00Z") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _utc(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else "never"


def cmd_keys(args: argparse.Namespace) -> int:
    """``rft keys create|list|revoke``; create and revoke are audited with actor ``cli``."""
    from jobs.store import ApiKey, Project, Store
    from service import audit
    from service.auth import create_key, is_expired, revoke_key

    settings = _settings(args)
    settings.ensure_dirs()
    store = Store(settings.resolved_database_url)
    store.migrate()
    with store.session() as session:
        if args.keys_command == "create":
            expires_at = None
            if args.expires_in is not None:
                expires_at = math.ceil(time.time() + args.expires_in)
            elif args.expires_at is not None:
                if args.expires_at <= time.time():
                    print(f"--expires-at {_utc(int(args.expires_at))} is already past", file=sys.stderr)  # noqa: T201
                    return 2
                expires_at = int(args.expires_at)
            plain, row = create_key(session, args.project, expires_at=expires_at)
            audit.record(session, None, "key.create", "api_key", row.id, {"expires_at": expires_at},
                         project_id=row.project_id)
            print(plain)  # noqa: T201 - the one time the key is shown
        elif args.keys_command == "list":
            for key, project in session.query(ApiKey, Project).join(Project).order_by(ApiKey.created_at):
                state = "revoked" if key.revoked_at else "expired" if is_expired(key) else "active"
                expiry = f"expires {_utc(key.expires_at)}"
                print(f"{key.id}\t{project.name}\t{key.prefix}...\t{state}\t{expiry}")  # noqa: T201
        elif args.keys_command == "revoke":
            row = revoke_key(session, args.key_id)
            if row is None:
                print(f"no active key {args.key_id}", file=sys.stderr)  # noqa: T201
                return 1
            audit.record(session, None, "key.revoke", "api_key", row.id, project_id=row.project_id)
    return 0


def cmd_demo_model(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.ensure_dirs()
    out = Path(args.out) if args.out else settings.resolved_models_dir / DEMO_MODEL_NAME
    return subprocess.call([sys.executable, "-m", "jobs.demo_model", "--out", str(out)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rft", description="Self-hosted reinforcement fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help="data directory (env RFT_DATA_DIR)")

    serve = sub.add_parser("serve", help="run the API, a worker and the inference process")
    common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="worker processes to start (0: none)")
    serve.add_argument("--no-inference", action="store_true", help="do not start the inference process")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run one worker against the shared database")
    common(worker)
    worker.set_defaults(func=cmd_worker)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--project", required=True)
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in", type=parse_duration, metavar="DURATION",
                        help="refuse the key after this long: 30d, 12h, 90m, 45s (default: never)")
    expiry.add_argument("--expires-at", type=parse_instant, metavar="ISO_TIME",
                        help="refuse the key from this ISO 8601 date or time, UTC unless given")
    listing = keys_sub.add_parser("list", help="list keys")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id")
    for leaf in (create, listing, revoke):
        common(leaf)
    keys.set_defaults(func=cmd_keys)

    demo = sub.add_parser("demo-model", help="build the tiny demo base model into the models dir")
    common(demo)
    demo.add_argument("--out", help="output folder (default: <models dir>/rft-demo-tiny)")
    demo.set_defaults(func=cmd_demo_model)

    check = sub.add_parser("sandbox-check", help="say whether python/code_exec graders can run sandboxed here")
    common(check)
    check.set_defaults(func=cmd_sandbox_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
