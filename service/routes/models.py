"""Models: list, retrieve, delete (fine-tuned only)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from jobs.export import remove_archives
from jobs.store import Model
from service import audit, inference_client
from service.deps import CurrentCaller, CurrentProject, SettingsDep, StoreDep
from service.errors import InvalidRequest
from service.model_lookup import find_model, list_models

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_all(project: CurrentProject, store: StoreDep, settings: SettingsDep) -> dict:
    """Base models and the project's fine-tuned models."""
    with store.session() as session:
        return {"object": "list", "data": [m.as_object() for m in list_models(session, settings, project.id)]}


@router.get("/{model_id}")
def retrieve(model_id: str, project: CurrentProject, store: StoreDep, settings: SettingsDep) -> dict:
    """One model: a base model, a fine-tuned model or a checkpoint name."""
    with store.session() as session:
        return find_model(session, settings, project.id, model_id).as_object()


@router.delete("/{model_id}")
async def delete(model_id: str, project: CurrentProject, caller: CurrentCaller, store: StoreDep,
                 settings: SettingsDep) -> dict:
    """Delete a fine-tuned model: it stops being served and its download archives go.
    Its checkpoint folder stays with its job."""
    with store.session() as session:
        model = find_model(session, settings, project.id, model_id)
        if model.kind != "fine-tuned":
            raise InvalidRequest(f"Only fine-tuned models can be deleted; `{model_id}` is a {model.kind} model.",
                                 param="model", code="model_not_deletable")
        row = session.get(Model, model_id)
        session.delete(row)
        audit.record(session, caller, "model.delete", "model", model_id, {"job_id": row.job_id})
    await inference_client.unload(settings, str(model.folder))
    await run_in_threadpool(remove_archives, model.folder, settings.data_dir / "exports")
    return {"id": model_id, "object": "model", "deleted": True}
