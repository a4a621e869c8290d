"""The audit trail: who changed what, and when (docs/audit.md).

Every state-changing route and ``rft keys`` command calls ``record`` inside the session
of its own change, so the event commits or rolls back with it: no event for a change
that did not happen, no change without its event. ``data`` carries a few non-secret
details chosen by each caller; never key material or request bodies (a grader may hold
an endpoint's credentials).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from jobs.store import AuditEvent, new_id, now
from service.deps import Caller

# Actions recorded, as ``<object>.<verb>``.
ACTIONS = (
    "job.create", "job.cancel", "job.pause", "job.resume",
    "file.create", "file.delete",
    "model.delete",
    "key.create", "key.revoke",
)
CLI_ACTOR = "cli"


def record(session: Session, caller: Caller | None, action: str, object_type: str, object_id: str,
           data: dict[str, Any] | None = None, *, project_id: str | None = None) -> AuditEvent:
    """Add one audit event to ``session``. ``caller`` is the request's; None for an
    operator's CLI command, which names the ``project_id`` instead."""
    assert action in ACTIONS, action
    event = AuditEvent(
        id=new_id("audit"),
        project_id=caller.project.id if caller else project_id,
        key_id=caller.key_id if caller else None,
        actor=caller.actor if caller else CLI_ACTOR,
        action=action,
        object_type=object_type,
        object_id=object_id,
        created_at=now(),
        data=data or {},
    )
    session.add(event)
    return event


def event_object(event: AuditEvent) -> dict[str, Any]:
    """The API form of an event (``AuditEventObject``)."""
    return {
        "id": event.id,
        "object": "audit_event",
        "created_at": event.created_at,
        "action": event.action,
        "actor": event.actor,
        "key_id": event.key_id,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "data": event.data or {},
    }
