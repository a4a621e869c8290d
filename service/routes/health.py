"""Liveness: ``GET /healthz`` needs no key.

Besides the database it reports whether user code (``python`` and ``code_exec``
graders) can run here, and how the sandbox caps memory: an operator should not find out
from a failed job that the image lacks a capability the sandbox needs.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from graders.sandbox import sandbox_report
from service.deps import SettingsDep, StoreDep
from service.grading import build_grader_context

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(store: StoreDep, settings: SettingsDep) -> dict:
    """OK when the API answers and the database is reachable; ``sandbox`` says whether
    user code runs sandboxed, unsafe or not at all, why, and how memory is capped."""
    with store.session() as session:
        session.execute(text("SELECT 1"))
    ctx = build_grader_context(settings)
    return {"status": "ok", "sandbox": sandbox_report(ctx)}
