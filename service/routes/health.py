"""Liveness: ``GET /healthz`` needs no key."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from service.deps import StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(store: StoreDep) -> dict:
    """OK when the API answers and the database is reachable."""
    with store.session() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}
