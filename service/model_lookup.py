"""Which models a project may use, and where their folders are (torch-free).

A model id is one of: a base model (a folder under the models dir, shared by every
project), a fine-tuned model of the caller's project (``models`` table), or a checkpoint
of one of the caller's jobs (``checkpoints.model_name``). Anything else, another
project's models included, reads as not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select

from jobs.base_models import list_base_models, registered_model
from jobs.store import Checkpoint, Model
from service.errors import NotFound
from service.guards import fits_name
from service.settings import Settings

BASE_OWNER = "rft"


@dataclass(frozen=True)
class ServedModel:
    """A model the caller may use: its id, kind, folder and OpenAI model-object fields."""

    id: str
    kind: Literal["base", "fine-tuned", "checkpoint"]
    folder: Path
    created: int
    owned_by: str

    def as_object(self) -> dict:
        """OpenAI's model object."""
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by}


def model_not_found(model_id: str) -> NotFound:
    """OpenAI's wording and code for an unknown model."""
    return NotFound(f"The model `{model_id}` does not exist or you do not have access to it.",
                    param="model", code="model_not_found")


def list_models(session, settings: Settings, project_id: str) -> list[ServedModel]:
    """Base models, then the project's fine-tuned models (checkpoints are not listed,
    as in OpenAI's API; they are usable by name)."""
    found = [ServedModel(b.name, "base", Path(b.location), b.created_at, BASE_OWNER)
             for b in list_base_models(settings.resolved_models_dir)]
    rows = session.scalars(select(Model).where(Model.project_id == project_id).order_by(Model.created_at))
    found.extend(_fine_tuned(settings, row) for row in rows)
    return found


def check_model_name(model_id: str) -> None:
    """404 (OpenAI's unknown-model answer) for a model id that cannot name a folder nor
    be sent to the database (over 255 bytes, NUL)."""
    if not fits_name(model_id):
        raise model_not_found(model_id)


def find_model(session, settings: Settings, project_id: str, model_id: str) -> ServedModel:
    """The model the caller names, or a 404 in OpenAI's shape."""
    check_model_name(model_id)
    row = session.get(Model, model_id)
    if row is not None and row.project_id == project_id:
        return _fine_tuned(settings, row)
    ckpt = session.scalar(select(Checkpoint).where(Checkpoint.model_name == model_id,
                                                   Checkpoint.project_id == project_id))
    if ckpt is not None:
        return ServedModel(ckpt.model_name, "checkpoint", settings.data_dir / ckpt.path,
                           ckpt.created_at, project_id)
    folder = registered_model(settings.resolved_models_dir, model_id)
    if folder is not None:
        return ServedModel(model_id, "base", folder, int(folder.stat().st_mtime), BASE_OWNER)
    raise model_not_found(model_id)


def _fine_tuned(settings: Settings, row: Model) -> ServedModel:
    return ServedModel(row.id, "fine-tuned", settings.data_dir / row.path, row.created_at, row.project_id)
