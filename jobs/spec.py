"""Job statuses and the groups the API and the queue reason about."""

from __future__ import annotations

VALIDATING = "validating_files"
QUEUED = "queued"
RUNNING = "running"
PAUSED = "paused"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

# A job in one of these has not finished: its files may not be deleted.
ACTIVE_STATUSES = (VALIDATING, QUEUED, RUNNING, PAUSED)
FINISHED_STATUSES = (SUCCEEDED, FAILED, CANCELLED)
