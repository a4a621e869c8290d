"""Job statuses and the groups the API and the queue reason about."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """A job's ``status`` as OpenAI names it; stored in the database as the plain string."""

    VALIDATING = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job in one of these has not finished: its files may not be deleted.
ACTIVE_STATUSES = (JobStatus.VALIDATING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)
FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
