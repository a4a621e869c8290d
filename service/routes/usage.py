"""``GET /v1/usage`` (an rft extension): the caller's project against its quotas, and
the calling key's rate limit (service.quotas, service.rate_limit)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from pydantic import BaseModel

from service import quotas
from service.deps import CurrentProject, SettingsDep, StoreDep
from service.rate_limit import RATE_STATE, RateState
from service.routes.graders import RunLimiterDep

router = APIRouter(prefix="/v1/usage", tags=["usage"])


class Quota(BaseModel):
    """One quota: ``limit`` and ``remaining`` are null when there is no limit."""

    limit: int | None
    used: int
    remaining: int | None
    setting: str  # the environment variable that sets ``limit``


class JobsQuota(Quota):
    by_status: dict[str, int]  # the unfinished jobs counted in ``used``


class GraderRunQuota(Quota):
    """/graders/run slots of this project in this API process; past ``limit`` requests
    wait (round-robin between projects), and past ``waiting_limit`` waiting they are
    refused."""

    waiting: int
    waiting_limit: int | None
    waiting_setting: str


class RateLimit(BaseModel):
    """The calling key's token bucket in this API process, after this request (OpenAI's
    ``x-ratelimit-*-requests`` headers say the same on every answer)."""

    limit_requests: int  # the bucket's size (RFT_RATE_LIMIT_BURST)
    remaining_requests: int
    reset_requests_seconds: float  # until the bucket is full again
    requests_per_second: float  # the refill rate (RFT_RATE_LIMIT_PER_SECOND)


class Usage(BaseModel):
    object: str = "usage"
    project_id: str
    active_jobs: JobsQuota
    files: Quota
    file_bytes: Quota
    grader_run_slots: GraderRunQuota
    rate_limit: RateLimit | None  # null when rate limiting is off, or for the internal token


def _quota(limit: int, used: int, setting: str) -> dict:
    return {"limit": limit or None, "used": used, "remaining": max(0, limit - used) if limit else None,
            "setting": setting}


@router.get("", response_model=Usage)
async def get_usage(request: Request, project: CurrentProject, settings: SettingsDep, store: StoreDep,
                    limiter: RunLimiterDep) -> Usage:
    """The project's usage against each of its limits."""

    def count() -> tuple[dict[str, int], tuple[int, int]]:
        with store.session() as session:
            return quotas.jobs_by_status(session, project.id), quotas.file_usage(session, project.id)

    by_status, (n_files, n_bytes) = await anyio.to_thread.run_sync(count)
    rate: RateState | None = request.scope.get("state", {}).get(RATE_STATE)
    waiting_limit = settings.grader_run_waiting_per_project
    return Usage(
        project_id=project.id,
        active_jobs=JobsQuota(**_quota(settings.max_active_jobs_per_project, sum(by_status.values()),
                                       "RFT_MAX_ACTIVE_JOBS_PER_PROJECT"), by_status=by_status),
        files=Quota(**_quota(settings.max_files_per_project, n_files, "RFT_MAX_FILES_PER_PROJECT")),
        file_bytes=Quota(**_quota(settings.max_file_bytes_per_project, n_bytes, "RFT_MAX_FILE_BYTES_PER_PROJECT")),
        grader_run_slots=GraderRunQuota(
            **_quota(settings.grader_run_slots_per_project, limiter.held_by(project.id),
                     "RFT_GRADER_RUN_SLOTS_PER_PROJECT"),
            waiting=limiter.waiting_for(project.id), waiting_limit=waiting_limit or None,
            waiting_setting="RFT_GRADER_RUN_WAITING_PER_PROJECT"),
        rate_limit=None if rate is None else RateLimit(
            limit_requests=rate.limit, remaining_requests=rate.remaining,
            reset_requests_seconds=round(rate.reset_seconds, 3), requests_per_second=rate.per_second),
    )
