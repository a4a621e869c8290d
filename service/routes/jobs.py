"""Fine-tuning jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

import json

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select, update

from jobs.queue import add_event
from jobs.status import FINISHED_STATUSES, JobStatus
from jobs.store import Checkpoint, Job, JobEvent, new_id, now
from service import audit
from service.deps import CurrentCaller, CurrentProject, SettingsDep, StoreDep
from service.errors import Conflict, InvalidRequest, NotFound
from service.guards import fits_path, parse_json_body
from service.job_requests import body_hash, check_create_body
from service.pagination import list_body, page
from service.quotas import check_job_quota

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def job_object(job: Job) -> dict:
    """The OpenAI fine-tuning job object, plus progress fields of our own."""
    hyper = (job.method.get(job.method["type"]) or {}).get("hyperparameters", {})
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "model": job.model,
        "status": job.status,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": job.project_id,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "result_files": [],
        "trained_tokens": job.trained_tokens,
        "error": job.error,
        "method": job.method,
        "hyperparameters": {k: hyper.get(k) for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "seed": job.seed,
        "estimated_finish": job.estimated_finish,
        "integrations": None,
        "metadata": job.user_metadata,
        "user_provided_suffix": job.suffix,
        # Extensions: live progress and retries.
        "step": job.current_step,
        "total_steps": job.total_steps,
        "attempts": job.attempts,
    }


def event_object(event: JobEvent) -> dict:
    """The OpenAI job event object."""
    return {
        "id": event.id,
        "object": "fine_tuning.job.event",
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        "type": event.type,
        "data": event.data,
    }


def checkpoint_object(ckpt: Checkpoint) -> dict:
    """The OpenAI job checkpoint object."""
    return {
        "id": ckpt.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": ckpt.created_at,
        "fine_tuned_model_checkpoint": ckpt.model_name,
        "fine_tuning_job_id": ckpt.job_id,
        "step_number": ckpt.step,
        "metrics": {"step": ckpt.step, **(ckpt.metrics or {})},
    }


def get_owned_job(session, project_id: str, job_id: str) -> Job:
    """The caller's job, or 404 (also for another project's job)."""
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"No such fine-tuning job: '{job_id}'.", param="fine_tuning_job_id")
    return job


@router.post("")
async def create_job(
    request: Request,
    project: CurrentProject,
    caller: CurrentCaller,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: str | None = Header(default=None),
) -> dict:
    """Validate the whole body, then store the job as queued."""
    body = parse_json_body(await request.body())
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and not model.startswith("ft:") and not fits_path(model):
        # A base model is looked up on disk (a folder name, or a local path); a name no
        # file system can hold is unknown, not a 500. (ft: names are database rows.)
        raise InvalidRequest(
            f"Unknown base model '{model[:64]}...': a model name or path part is at most 255 bytes, without NUL.",
            param="model", code="model_not_found")
    digest = body_hash(body)
    with store.session() as session:
        if idempotency_key:
            if len(idempotency_key) > 256:
                raise InvalidRequest("Idempotency-Key is longer than 256 characters.", param="Idempotency-Key")
            prior = session.scalar(
                select(Job).where(Job.project_id == project.id, Job.idempotency_key == idempotency_key)
            )
            if prior is not None:
                if prior.request_hash != digest:
                    raise Conflict(
                        "This Idempotency-Key was used with a different request body.",
                        param="Idempotency-Key",
                        code="idempotency_key_reused",
                    )
                return job_object(prior)
        checked = check_create_body(session, project, settings, body)
        # Last before the insert: it locks the project until the commit.
        check_job_quota(session, settings, project.id)
        job = Job(
            id=new_id("ftjob"),
            project_id=project.id,
            model=checked.model,
            status=JobStatus.VALIDATING,
            created_at=now(),
            training_file=checked.training_file.id,
            validation_file=checked.validation_file.id if checked.validation_file else None,
            suffix=checked.suffix,
            seed=checked.seed,
            user_metadata=checked.metadata,
            method=checked.method,
            idempotency_key=idempotency_key,
            request_hash=digest,
            max_attempts=settings.max_attempts,
        )
        session.add(job)
        add_event(session, job.id, f"Validating training file: {checked.training_file.id}")
        hyper = checked.method["reinforcement"]["hyperparameters"]
        add_event(session, job.id, "Resolved hyperparameters: " + json.dumps(hyper, sort_keys=True), data=hyper)
        job.status = JobStatus.QUEUED
        add_event(session, job.id, "Files validated; the job is queued.")
        audit.record(session, caller, "job.create", "fine_tuning.job", job.id, {
            "model": job.model, "method": job.method["type"], "training_file": job.training_file,
            "validation_file": job.validation_file})
        return job_object(job)


@router.get("")
def list_jobs(project: CurrentProject, store: StoreDep, after: str | None = None, limit: int = Query(default=20)) -> dict:
    """The project's jobs, newest first."""
    with store.session() as session:
        query = select(Job).where(Job.project_id == project.id)
        rows, has_more = page(session, query, Job, after=after, limit=limit)
        return list_body([job_object(j) for j in rows], has_more)


@router.get("/{job_id}")
def retrieve_job(job_id: str, project: CurrentProject, store: StoreDep) -> dict:
    """One job."""
    with store.session() as session:
        return job_object(get_owned_job(session, project.id, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, project: CurrentProject, caller: CurrentCaller, store: StoreDep) -> dict:
    """Cancel: at once when not running, else the worker stops the trainer within seconds."""
    with store.session() as session:
        job = get_owned_job(session, project.id, job_id)
        before = job.status
        if job.status in FINISHED_STATUSES:
            raise Conflict(f"Job '{job_id}' has already {job.status}; it cannot be cancelled.", param="fine_tuning_job_id")
        if job.status == JobStatus.RUNNING:
            job.requested_action = "cancel"
            add_event(session, job.id, "Cancellation requested.")
        else:
            _cas_status(session, job, JobStatus.CANCELLED, finished_at=now())
            add_event(session, job.id, "Job cancelled.")
        audit.record(session, caller, "job.cancel", "fine_tuning.job", job.id,
                     {"status_before": before, "status_after": job.status})
        session.flush()
        return job_object(job)


@router.post("/{job_id}/pause")
def pause_job(job_id: str, project: CurrentProject, caller: CurrentCaller, store: StoreDep) -> dict:
    """Pause: a running job checkpoints and stops; a queued one just waits."""
    with store.session() as session:
        job = get_owned_job(session, project.id, job_id)
        before = job.status
        if job.status == JobStatus.RUNNING:
            job.requested_action = "pause"
            add_event(session, job.id, "Pause requested; the job will checkpoint and stop.")
        elif job.status in (JobStatus.QUEUED, JobStatus.VALIDATING):
            _cas_status(session, job, JobStatus.PAUSED)
            add_event(session, job.id, "Job paused before it started.")
        else:
            raise Conflict(
                f"Job '{job_id}' is {job.status}; only running or queued jobs can be paused.", param="fine_tuning_job_id"
            )
        audit.record(session, caller, "job.pause", "fine_tuning.job", job.id,
                     {"status_before": before, "status_after": job.status})
        session.flush()
        return job_object(job)


@router.post("/{job_id}/resume")
def resume_job(job_id: str, project: CurrentProject, caller: CurrentCaller, store: StoreDep) -> dict:
    """Resume a paused job: it is queued again and continues from its newest checkpoint."""
    with store.session() as session:
        job = get_owned_job(session, project.id, job_id)
        before = job.status
        if job.status != JobStatus.PAUSED:
            raise Conflict(f"Job '{job_id}' is {job.status}; only paused jobs can be resumed.", param="fine_tuning_job_id")
        _cas_status(session, job, JobStatus.QUEUED)
        add_event(session, job.id, "Job resumed; it is queued.")
        audit.record(session, caller, "job.resume", "fine_tuning.job", job.id,
                     {"status_before": before, "status_after": job.status})
        session.flush()
        return job_object(job)


def _cas_status(session, job: Job, status: str, **values) -> None:
    """Change status only if no worker changed it meanwhile (compare-and-set on status and token)."""
    res = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == job.status, Job.lease_token == job.lease_token)
        .values(status=status, **values)
    )
    if res.rowcount != 1:
        raise Conflict(f"Job '{job.id}' changed state meanwhile; retry.", param="fine_tuning_job_id")
    session.refresh(job)


@router.get("/{job_id}/events")
def list_events(
    job_id: str, project: CurrentProject, store: StoreDep, after: str | None = None, limit: int = Query(default=20)
) -> dict:
    """The job's events, newest first."""
    with store.session() as session:
        get_owned_job(session, project.id, job_id)
        query = select(JobEvent).where(JobEvent.job_id == job_id)
        rows, has_more = page(session, query, JobEvent, after=after, limit=limit, order_col=JobEvent.seq)
        return list_body([event_object(e) for e in rows], has_more)


@router.get("/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str, project: CurrentProject, store: StoreDep, after: str | None = None, limit: int = Query(default=10)
) -> dict:
    """The job's kept checkpoints, newest step first."""
    with store.session() as session:
        get_owned_job(session, project.id, job_id)
        query = select(Checkpoint).where(Checkpoint.job_id == job_id)
        rows, has_more = page(session, query, Checkpoint, after=after, limit=limit, order_col=Checkpoint.step)
        return list_body([checkpoint_object(c) for c in rows], has_more)
