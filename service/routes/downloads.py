"""Downloads: a model or a checkpoint as a tar of a Hugging Face folder, with its sha256
in the ``X-Content-SHA256`` header (sent before the body, so a client can verify the
bytes as they arrive)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import or_, select

from jobs.export import archive_dirname, archive_for
from jobs.store import Checkpoint
from service.deps import CurrentProject, SettingsDep, StoreDep
from service.errors import NotFound
from service.model_lookup import find_model
from service.routes.jobs import get_owned_job
from service.settings import Settings

router = APIRouter(tags=["downloads"])

SHA_HEADER = "X-Content-SHA256"


@router.get("/v1/models/{model_id}/content")
async def model_content(model_id: str, project: CurrentProject, store: StoreDep, settings: SettingsDep):
    """A base model, fine-tuned model or checkpoint as a tar."""
    with store.session() as session:
        model = find_model(session, settings, project.id, model_id)
    return await _tar_response(settings, model.folder, model.id)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint}/content")
async def checkpoint_content(job_id: str, checkpoint: str, project: CurrentProject, store: StoreDep,
                             settings: SettingsDep):
    """One of a job's checkpoints as a tar; ``checkpoint`` is its id (``ftckpt-...``),
    its folder name (``step-10``) or its model name. LoRA checkpoints carry the merged
    model at the top level and the adapter in ``adapter/``."""
    with store.session() as session:
        get_owned_job(session, project.id, job_id)
        ckpt = session.scalar(select(Checkpoint).where(
            Checkpoint.job_id == job_id,
            or_(Checkpoint.id == checkpoint, Checkpoint.name == checkpoint, Checkpoint.model_name == checkpoint)))
        if ckpt is None:
            raise NotFound(f"No such checkpoint of job '{job_id}': '{checkpoint}'.", param="checkpoint")
    return await _tar_response(settings, settings.data_dir / ckpt.path, ckpt.model_name)


async def _tar_response(settings: Settings, folder: Path, model_id: str) -> FileResponse:
    name = archive_dirname(model_id)
    try:
        archive = await run_in_threadpool(archive_for, folder, settings.data_dir / "exports", name)
    except FileNotFoundError:
        raise NotFound(f"The files of `{model_id}` are no longer on this server.", param="model") from None
    return FileResponse(archive.path, media_type="application/x-tar", filename=f"{name}.tar",
                        headers={SHA_HEADER: archive.sha256})
