"""The audit trail (rft extension): ``GET /v1/audit_events``, the caller's project only."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from jobs.store import AuditEvent
from service.audit import event_object
from service.deps import CurrentProject, StoreDep
from service.pagination import list_body, page

router = APIRouter(prefix="/v1/audit_events", tags=["audit"])


class AuditEventObject(BaseModel):
    """One recorded action: who (``actor``, ``key_id``) did ``action`` to which object."""

    id: str
    object: Literal["audit_event"]
    created_at: int
    action: str
    actor: Literal["api_key", "cli", "internal"]
    key_id: str | None
    object_type: str
    object_id: str
    data: dict[str, Any]


class AuditEventList(BaseModel):
    """OpenAI's list shape."""

    object: Literal["list"]
    data: list[AuditEventObject]
    has_more: bool
    first_id: str | None
    last_id: str | None


@router.get("", response_model=AuditEventList)
def list_audit_events(
    project: CurrentProject,
    store: StoreDep,
    after: str | None = None,
    limit: int = Query(default=20),
    action: str | None = None,
    object_id: str | None = None,
) -> dict:
    """The project's audit events, newest first; ``action`` and ``object_id`` filter."""
    with store.session() as session:
        query = select(AuditEvent).where(AuditEvent.project_id == project.id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        if object_id is not None:
            query = query.where(AuditEvent.object_id == object_id)
        rows, has_more = page(session, query, AuditEvent, after=after, limit=limit, order_col=AuditEvent.seq)
        return list_body([event_object(e) for e in rows], has_more)
