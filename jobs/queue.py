"""The durable job queue in SQL: atomic claims, leases with heartbeats, fencing tokens.

A worker claims a queued job with a compare-and-set ``UPDATE`` (portable: SQLite
serialises writers, Postgres row-locks), which bumps ``lease_token``. Every later write
for that job is made after ``fence`` in the same transaction: it renews the lease only
while the token is still ours, so a worker whose lease expired (and whose job another
worker re-claimed) can no longer write anything.

Which failed attempts count against ``max_attempts`` (``Job.charged_attempts``):

- The trainer failed: it exited non-zero while its worker was alive (jobs/job_run.py).
  Always charged: a job that crashes its trainer ``max_attempts`` times fails with the
  trainer's error.
- The machinery failed: the lease expired because the worker died, its node restarted
  or it lost the database (``reap_expired``). Not the job's fault, so not charged when
  the attempt made durable progress: a checkpoint newer than the one it started from
  (``Job.progress_step`` against ``Job.claim_progress_step``). Such a job resumes from
  that checkpoint and loses nothing. A lost attempt that saved no new checkpoint *is*
  charged: a job that takes its worker down every time before it checkpoints (an OOM
  that kills the node at model load) must not loop forever. Uncharged retries are
  bounded too, by the job's number of checkpoints: each one moves ``progress_step`` on.

A worker that stops cleanly hands its job back uncharged (``JobRun._hand_back``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs.status import JobStatus
from jobs.store import Job, JobEvent, Store, new_id, now


class LeaseLost(RuntimeError):
    """Our lease on the job expired or was taken over; stop writing for it."""


@dataclass(frozen=True)
class Claim:
    """A job this worker holds: its id, fencing token and attempt number."""

    job_id: str
    token: int
    attempt: int


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> JobEvent:
    """Append an event to a job's log."""
    event = JobEvent(
        id=event_id or new_id("ftevent"),
        job_id=job_id,
        created_at=now(),
        level=level,
        type=type,
        message=message,
        data=data,
    )
    session.add(event)
    return event


def reap_expired(store: Store) -> list[str]:
    """Re-queue running jobs whose lease expired (their worker died), charging the attempt
    only when it saved no new checkpoint; fail those out of attempts (see the module doc).

    Returns the ids of the jobs it touched.
    """
    touched: list[str] = []
    current = time.time()
    with store.session() as session:
        stale = session.scalars(
            select(Job).where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < current)
        ).all()
        for job in stale:
            progressed = job.progress_step > job.claim_progress_step
            charged = job.charged_attempts + (0 if progressed else 1)
            if progressed:
                values = dict(status=JobStatus.QUEUED)
                note, level = (
                    f"Worker lost on attempt {job.attempts} after it saved checkpoint step-{job.progress_step}; "
                    "the job was re-queued and will resume from its newest checkpoint. Not counted against "
                    f"its attempts ({charged} of {job.max_attempts} used).",
                    "warn",
                )
            elif charged >= job.max_attempts:
                values = dict(
                    status=JobStatus.FAILED,
                    finished_at=now(),
                    estimated_finish=None,
                    error={
                        "code": "worker_lost",
                        "message": "The job's worker stopped responding before the job saved a new checkpoint, "
                        f"on {charged} of its attempts.",
                        "param": None,
                    },
                )
                note, level = (
                    f"Worker lost on attempt {job.attempts} before a new checkpoint; no attempts left "
                    f"({charged} of {job.max_attempts} used), the job failed.",
                    "error",
                )
            else:
                values = dict(status=JobStatus.QUEUED)
                note, level = (
                    f"Worker lost on attempt {job.attempts} before a new checkpoint ({charged} of "
                    f"{job.max_attempts} attempts used); the job was re-queued and will resume from its "
                    "newest checkpoint.",
                    "warn",
                )
            # Compare-and-set on the token and the expiry: a worker renewing (``fence``) or
            # relaying a checkpoint at this very moment moves lease_expires_at on and wins.
            res = session.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.lease_token == job.lease_token,
                    Job.status == JobStatus.RUNNING,
                    Job.lease_expires_at < current,
                )
                .values(
                    lease_owner=None,
                    lease_expires_at=None,
                    lease_token=Job.lease_token + 1,
                    charged_attempts=charged,
                    **values,
                )
            )
            if res.rowcount == 1:
                add_event(session, job.id, note, level=level)
                touched.append(job.id)
    return touched


def claim_next(store: Store, worker_id: str, lease_seconds: float) -> Claim | None:
    """Atomically take the oldest queued job, or return None when there is none."""
    while True:
        with store.session() as session:
            candidate = session.execute(
                select(Job.id, Job.lease_token, Job.attempts)
                .where(Job.status == JobStatus.QUEUED)
                .order_by(Job.created_at, Job.id)
                .limit(1)
            ).first()
            if candidate is None:
                return None
            current = time.time()
            res = session.execute(
                update(Job)
                .where(
                    Job.id == candidate.id,
                    Job.status == JobStatus.QUEUED,
                    Job.lease_token == candidate.lease_token,
                )
                .values(
                    status=JobStatus.RUNNING,
                    lease_owner=worker_id,
                    lease_token=candidate.lease_token + 1,
                    lease_expires_at=current + lease_seconds,
                    heartbeat_at=current,
                    attempts=candidate.attempts + 1,
                    # The baseline this attempt's progress is measured from (reap_expired).
                    claim_progress_step=Job.progress_step,
                    requested_action=None,
                )
            )
            if res.rowcount == 1:
                job = session.get(Job, candidate.id)
                if job.started_at is None:
                    job.started_at = now()
                return Claim(candidate.id, candidate.lease_token + 1, candidate.attempts + 1)
        # Another worker won this one; look again.


def fence(session: Session, claim: Claim, lease_seconds: float) -> str | None:
    """Renew the lease inside ``session``'s transaction, or raise LeaseLost.

    Returns the action the user asked for meanwhile ("pause", "cancel") or None.
    """
    current = time.time()
    res = session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_token == claim.token, Job.status == JobStatus.RUNNING)
        .values(heartbeat_at=current, lease_expires_at=current + lease_seconds)
    )
    if res.rowcount != 1:
        raise LeaseLost(claim.job_id)
    return session.scalar(select(Job.requested_action).where(Job.id == claim.job_id))


def requested_action(store: Store, job_id: str) -> str | None:
    """What the user asked of the job ("pause", "cancel"), read without touching the lease."""
    with store.session() as session:
        return session.scalar(select(Job.requested_action).where(Job.id == job_id))


def release(session: Session, claim: Claim, lease_seconds: float, **values: Any) -> None:
    """Set the job's final (or paused / re-queued) state and give up the lease, fenced."""
    fence(session, claim, lease_seconds)
    session.execute(
        update(Job)
        .where(Job.id == claim.job_id, Job.lease_token == claim.token)
        .values(lease_owner=None, lease_expires_at=None, requested_action=None, **values)
    )
