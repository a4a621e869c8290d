"""Service settings: one pydantic-settings class, read from ``RFT_*`` environment variables.

The app factory takes a ``Settings`` instance, so tests build their own instead of
patching globals.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from graders.base import JudgeEndpoint


class Settings(BaseSettings):
    """Everything the API process and the processes it starts need to know."""

    model_config = SettingsConfigDict(env_prefix="RFT_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path("rft-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: a SQLite file in the data dir"
    )
    host: str = "127.0.0.1"
    port: int = 8000

    # Request bodies. Every route but the upload is a JSON route, whose body is buffered
    # whole, so it gets a small cap (service.guards.RequestGuard; checked only once the
    # key is). The largest legitimate JSON body is a POST /graders/run whose model_sample
    # is at its 4 Mi-character cap: up to 12 MiB of UTF-8 for non-ASCII text, plus a
    # python grader's source (256 kB at most). A job body (graders, a response schema)
    # and a chat request (a 128k-token context is ~0.5 MB of text) are far smaller.
    max_json_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)

    # Uploads (streamed to disk, never buffered whole).
    max_upload_bytes: int = 512 * 1024 * 1024
    max_file_lines: int = 1_000_000
    max_line_bytes: int = 1024 * 1024

    # Base models come from the operator, never from the caller: every sub-folder of
    # models_dir holding a config.json is a base model named after the folder (the demo
    # model is built into <data_dir>/models), plus hub ids when allow_hub_models.
    models_dir: Path | None = None
    allow_hub_models: bool = True
    # UNSAFE on a shared server: lets every API caller name an absolute path to any model
    # folder this machine can read as a job's base model, and download it as the job's
    # step-0 checkpoint. Paths into data_dir and rft checkpoints stay refused. For a
    # single-user server only (docs/models.md).
    allow_local_model_paths: bool = False

    # Jobs.
    min_training_rows: int = 8

    # Engine processes started by `rft serve`.
    workers: int = 1
    start_inference: bool = True
    inference_port: int = 0  # 0: pick a free loopback port at start
    inference_url: str | None = None  # set by `rft serve` once the port is known
    internal_token: str = ""
    inference_timeout_seconds: float = 600.0

    # Queue.
    lease_seconds: float = 30.0
    max_attempts: int = 3

    # Graders.
    allow_unsafe_sandbox: bool = False
    judge_endpoints: dict[str, JudgeEndpoint] = Field(default_factory=dict)
    endpoint_allowlist: list[str] = Field(default_factory=list)
    reward_models: dict[str, str] = Field(default_factory=dict)  # name -> local model folder

    # POST /graders/run: slow gradings (sandboxed code, judges, endpoints) at once in the
    # API process. A python grader holds a sandbox (up to its memory cap) for up to its
    # wall limit, so the total is a memory bound. Per project: 2 of the default 8, so one
    # project flooding /run (ten slow calls) still leaves most slots to others, and at
    # least four projects are served at once. /run is for trying a grader on a sample,
    # where two in flight is plenty; bulk grading belongs in a job. Waiters are served
    # round-robin by project (service.fair_limiter).
    grader_run_slots: int = Field(default=8, ge=1)
    grader_run_slots_per_project: int = Field(default=2, ge=1)
    # Both per-project numbers are quotas (docs/quotas.md), shown by GET /v1/usage.
    # A project's /run requests waiting for a slot; one more is refused (429, Retry-After)
    # rather than held: each waiter keeps its body (up to max_json_body_bytes) in memory.
    # 16 lets a client fan out a batch of tries. 0: no limit.
    grader_run_waiting_per_project: int = Field(default=16, ge=0)

    # Rate limit per API key (service.rate_limit): a token bucket of rate_limit_burst
    # requests, refilled at rate_limit_per_second; over it, 429 with Retry-After. 0 per
    # second turns it off. Kept per API process: behind N API processes a key gets N
    # times this. It is there to stop a runaway loop from taking the event loop (each
    # authenticated request costs it ~1-3 ms), not to meter normal use, so it is
    # generous: an SDK call is one request and a job poller a few a second; 100/s is
    # 6,000 a minute, about OpenAI's own per-minute request limits of its upper tiers;
    # a burst of 1,000 lets an eval fan out hundreds of chat calls at once. The fastest
    # client we know, the fuzz tests' sequential keep-alive loop (~1,100 requests in
    # ~15 s on two busy cores, up to ~150/s), stays inside it on a machine 10x faster.
    rate_limit_per_second: float = Field(default=100.0, ge=0)
    rate_limit_burst: int = Field(default=1000, ge=1)

    # Quotas per project (service.quotas); 0: no limit. Over one: 429 quota_exceeded.
    # Unfinished jobs (validating_files, queued, running, paused: each holds a place in
    # the queue or a GPU, and a paused one comes back). 32 is far more than a GPU node
    # runs at once (one per worker) and keeps one project from burying the queue in
    # front of everyone else's jobs; the input-fuzz tests leave ~18 queued in one project.
    max_active_jobs_per_project: int = Field(default=32, ge=0)
    # Uploaded files, counted and summed over the project's files (each upload is also
    # capped by max_upload_bytes): 1,000 files, 20 GiB (40 uploads at their cap).
    max_files_per_project: int = Field(default=1000, ge=0)
    max_file_bytes_per_project: int = Field(default=20 * 1024**3, ge=0)

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def resolved_database_url(self) -> str:
        """The configured database URL, or the SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'rft.db'}"

    @property
    def resolved_models_dir(self) -> Path:
        """Where base models live: the configured folder, else ``<data_dir>/models``."""
        return self.models_dir or self.data_dir / "models"

    def ensure_dirs(self) -> None:
        """Create the data dir and its sub-folders."""
        for sub in ("files", "jobs", "exports", "tmp", "models"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
