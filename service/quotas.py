"""Per-project quotas: active jobs, uploaded files (count and bytes), waiting gradings.

Each quota is a setting (``Settings``: ``max_active_jobs_per_project``,
``max_files_per_project``, ``max_file_bytes_per_project``,
``grader_run_slots_per_project``, ``grader_run_waiting_per_project``; 0 means unlimited
where it can). Usage is counted from the tables themselves (jobs by status, files'
bytes), so there is no counter to drift. A request over a quota is refused with 429
``quota_exceeded``, a message naming the limit and its setting, and
``x-should-retry: false`` (the openai client would otherwise retry a refusal that
waiting a second cannot lift); no ``Retry-After``, since the quota frees only when the
project finishes, cancels or deletes something.

The check and the insert share one transaction that first locks the project's row
(``lock_project``), so two concurrent creates cannot both take the last slot, also from
two API nodes on one PostgreSQL database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.status import ACTIVE_STATUSES
from jobs.store import File, Job, Project, Store
from service.errors import QuotaExceeded
from service.settings import Settings

# A multipart body is its file part plus an envelope: the boundaries and part headers
# (a few hundred bytes from the openai client), the purpose field. A body declaring more
# than this over the bytes left cannot hold a file that fits, and is refused unread.
ENVELOPE_SLACK_BYTES = 64 * 1024

NO_RETRY = {"x-should-retry": "false"}


def lock_project(session: Session, project_id: str) -> None:
    """Hold the project's row until the transaction ends: the quota check and insert
    that follow are serialised per project.

    A no-op UPDATE rather than ``SELECT ... FOR UPDATE``, because it locks on both
    databases: on PostgreSQL it takes the row lock (concurrent inserts referencing the
    project, which take only a key-share lock, are not blocked), and on SQLite, where
    the driver starts a transaction only at the first write, it takes the database's
    write lock, so the counts read after it are the latest.
    """
    session.execute(update(Project).where(Project.id == project_id).values(created_at=Project.created_at))


def jobs_by_status(session: Session, project_id: str) -> dict[str, int]:
    """The project's unfinished jobs, counted by status."""
    rows = session.execute(
        select(Job.status, func.count()).where(Job.project_id == project_id, Job.status.in_(ACTIVE_STATUSES))
        .group_by(Job.status)
    )
    counts = dict.fromkeys(ACTIVE_STATUSES, 0)
    counts.update({status: n for status, n in rows})
    return counts


def file_usage(session: Session, project_id: str) -> tuple[int, int]:
    """(files, bytes) the project's uploads hold."""
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(File.bytes), 0)).where(File.project_id == project_id)
    ).one()
    return int(count), int(size)


def check_job_quota(session: Session, settings: Settings, project_id: str) -> None:
    """Lock the project and refuse one more active job over ``max_active_jobs_per_project``.
    Call it in the transaction that adds the job, right before adding it."""
    limit = settings.max_active_jobs_per_project
    if not limit:
        return
    lock_project(session, project_id)
    active = sum(jobs_by_status(session, project_id).values())
    if active >= limit:
        raise QuotaExceeded(
            f"This project has {active} unfinished fine-tuning jobs (validating_files, queued, running or "
            f"paused), its limit (RFT_MAX_ACTIVE_JOBS_PER_PROJECT={limit}). Cancel one or wait for one to "
            "finish.", headers=dict(NO_RETRY))


@dataclass(frozen=True)
class UploadRoom:
    """What one more upload of the project may take: files and bytes left (None: no
    limit), as read before the upload streams."""

    files_left: int | None
    bytes_left: int | None
    settings: Settings

    def check_declared(self, content_length: str | None) -> None:
        """Refuse, unread, a body whose declared length cannot hold a file that fits."""
        if self.files_left is not None and self.files_left <= 0:
            raise _too_many_files(self.settings)
        if (self.bytes_left is not None and content_length is not None and content_length.isdigit()
                and int(content_length) > self.bytes_left + ENVELOPE_SLACK_BYTES):
            raise too_many_bytes(self.settings, self.bytes_left)


def upload_room(session: Session, settings: Settings, project_id: str) -> UploadRoom:
    """The project's room for one more upload, now."""
    if not (settings.max_files_per_project or settings.max_file_bytes_per_project):
        return UploadRoom(files_left=None, bytes_left=None, settings=settings)
    count, size = file_usage(session, project_id)
    max_files, max_bytes = settings.max_files_per_project, settings.max_file_bytes_per_project
    return UploadRoom(files_left=max_files - count if max_files else None,
                      bytes_left=max(0, max_bytes - size) if max_bytes else None, settings=settings)


def read_upload_room(store: Store, settings: Settings, project_id: str) -> UploadRoom:
    """``upload_room`` in a session of its own (blocking: run it in a thread)."""
    with store.session() as session:
        return upload_room(session, settings, project_id)


def check_upload_quota(session: Session, settings: Settings, project_id: str, new_bytes: int) -> None:
    """Lock the project and refuse a file of ``new_bytes`` over its file quotas. Call it
    in the transaction that adds the file: a concurrent upload may have taken the room
    seen before streaming."""
    if not (settings.max_files_per_project or settings.max_file_bytes_per_project):
        return
    lock_project(session, project_id)
    room = upload_room(session, settings, project_id)
    if room.files_left is not None and room.files_left <= 0:
        raise _too_many_files(settings)
    if room.bytes_left is not None and new_bytes > room.bytes_left:
        raise too_many_bytes(settings, room.bytes_left)


def _too_many_files(settings: Settings) -> QuotaExceeded:
    return QuotaExceeded(
        f"This project has {settings.max_files_per_project} files, its limit "
        f"(RFT_MAX_FILES_PER_PROJECT={settings.max_files_per_project}). Delete a file to upload another.",
        param="file", headers=dict(NO_RETRY))


def too_many_bytes(settings: Settings, bytes_left: int) -> QuotaExceeded:
    """The refusal of a file larger than the ``bytes_left`` of the project's quota."""
    limit = settings.max_file_bytes_per_project
    return QuotaExceeded(
        f"This file does not fit in the project's upload quota: {bytes_left} of its "
        f"{limit} bytes are left (RFT_MAX_FILE_BYTES_PER_PROJECT={limit}). Delete files to make room.",
        param="file", headers=dict(NO_RETRY))


def too_many_waiting(settings: Settings) -> QuotaExceeded:
    """The refusal of a /graders/run that would queue behind too many of its project's
    own: a waiter holds its body in memory while slots are busy."""
    waiting = settings.grader_run_waiting_per_project
    return QuotaExceeded(
        f"This project already has {waiting} gradings waiting for a /graders/run slot, its limit "
        f"(RFT_GRADER_RUN_WAITING_PER_PROJECT={waiting}; each project runs at most "
        f"RFT_GRADER_RUN_SLOTS_PER_PROJECT={settings.grader_run_slots_per_project} at once). Retry when one "
        "has answered, or grade in bulk with a job.",
        headers={"Retry-After": "1"})
