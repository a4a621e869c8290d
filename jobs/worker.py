"""The worker: leases queued jobs and runs each in a freshly started trainer child.

Run as ``python -m jobs.worker`` (``rft serve`` and ``rft worker`` do). Configuration
comes from the ``RFT_*`` environment that the CLI sets. Several workers may share one
database; each job is held by one of them at a time (jobs/queue.py).

Each attempt is a ``jobs.job_run.JobRun``. The trainer child never touches the
database: the worker writes its ``spec.json``,
tails its ``events.jsonl`` into job events, checkpoints and the final status (every
write fenced by the lease token), and passes pause/cancel requests on through the
``control`` file. If the worker dies, the lease expires and another worker resumes the
job from its newest complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter

from jobs import queue
from jobs.job_run import JobRun
from jobs.store import Store

log = logging.getLogger("rft.worker")


def _env_flag(name: str, default: bool) -> bool:
    """A boolean setting read the way pydantic-settings (the API's side) reads it."""
    raw = os.environ.get(name, "")
    return default if raw == "" else TypeAdapter(bool).validate_python(raw.strip())


@dataclass
class WorkerConfig:
    """What a worker needs, read from the environment the CLI prepares."""

    data_dir: Path
    database_url: str
    models_dir: Path
    lease_seconds: float = 30.0
    poll_seconds: float = 0.25
    cancel_grace_seconds: float = 20.0
    grader_context: dict = field(default_factory=dict)
    allow_local_paths: bool = False
    allow_hub: bool = True
    worker_id: str = ""

    @classmethod
    def from_env(cls) -> WorkerConfig:
        data_dir = Path(os.environ.get("RFT_DATA_DIR", "rft-data")).resolve()
        return cls(
            data_dir=data_dir,
            database_url=os.environ.get("RFT_DATABASE_URL") or f"sqlite:///{data_dir / 'rft.db'}",
            models_dir=Path(os.environ.get("RFT_MODELS_DIR") or data_dir / "models"),
            lease_seconds=float(os.environ.get("RFT_LEASE_SECONDS", "30")),
            poll_seconds=float(os.environ.get("RFT_WORKER_POLL_SECONDS", "0.25")),
            grader_context=json.loads(os.environ.get("RFT_GRADER_CONTEXT") or "{}"),
            allow_local_paths=_env_flag("RFT_ALLOW_LOCAL_MODEL_PATHS", False),
            allow_hub=_env_flag("RFT_ALLOW_HUB_MODELS", True),
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
        )


class Worker:
    """Claims jobs one at a time and supervises their trainer children."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.store = Store(config.database_url)
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Ask the loop to end; a running job is handed back to the queue."""
        self.stopping.set()

    def run_forever(self) -> None:
        log.info("worker %s ready", self.config.worker_id)
        while not self.stopping.is_set():
            if not self.run_once():
                self.stopping.wait(self.config.poll_seconds)
        log.info("worker %s stopped", self.config.worker_id)

    def run_once(self) -> bool:
        """Reap expired leases, then claim and run one job. False when the queue was empty."""
        queue.reap_expired(self.store)
        claim = queue.claim_next(self.store, self.config.worker_id, self.config.lease_seconds)
        if claim is None:
            return False
        try:
            JobRun(self, claim).run()
        except queue.LeaseLost:
            log.warning("lost the lease on %s; another worker owns it now", claim.job_id)
        return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(WorkerConfig.from_env())
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run_forever()


if __name__ == "__main__":
    main()
