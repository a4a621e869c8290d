"""FastAPI dependencies, as ``Annotated`` aliases: ``SettingsDep``, ``StoreDep``,
``CurrentCaller`` (the project and the key a request acts as), ``CurrentProject``."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from jobs.store import Project, Store
from service.auth import get_or_create_project, is_expired, key_and_project
from service.errors import Unauthorized
from service.settings import Settings

INTERNAL_PROJECT = "rft:internal"
# Where RequestGuard leaves the Caller of a checked key, in the request state.
CALLER_STATE = "rft_caller"


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: its project, and the API key's id (None: the internal
    token). Audit events name the key."""

    project: Project
    key_id: str | None

    @property
    def actor(self) -> str:
        """``api_key`` or ``internal``, as audit events record it."""
        return "api_key" if self.key_id else "internal"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def bearer_key(header: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; 401 when missing or malformed."""
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>' (create one with `rft keys create`)."
        )
    return key.strip()


def is_internal_key(settings: Settings, key: str) -> bool:
    """True for the token engine processes call the API with."""
    # Bytes: compare_digest refuses str with non-ASCII characters, which a header may carry.
    return bool(settings.internal_token) and hmac.compare_digest(
        key.encode(), settings.internal_token.encode())


def authenticate(store: Store, settings: Settings, header: str) -> Caller | None:
    """Check an Authorization header without writing anything: the key's Caller, None
    for the internal token (whose project ``get_current_caller`` makes), 401 otherwise
    (also for a revoked or expired key). ``RequestGuard`` calls it before a body is read;
    it is the one check of every key."""
    key = bearer_key(header)
    if is_internal_key(settings, key):
        return None
    with store.session() as session:
        found = key_and_project(session, key)
    if found is None:
        raise Unauthorized("Incorrect API key provided.")
    row, project = found
    if is_expired(row):
        when = datetime.fromtimestamp(row.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise Unauthorized(f"This API key expired at {when}; ask the operator for a new one "
                           "(`rft keys create`).")
    return Caller(project, row.id)


def get_current_caller(request: Request) -> Caller:
    """The project and key of the bearer key; 401 when the key is missing, malformed,
    unknown, revoked or expired."""
    checked = request.scope.get("state", {}).get(CALLER_STATE)
    if checked is not None:
        return checked  # RequestGuard found it before reading the body
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    caller = authenticate(store, settings, header)
    if caller is None:
        # Engine processes (LLM judges naming a model this service serves) call the API
        # with the internal token; they act as a project that owns nothing, so they
        # reach base models only.
        with store.session() as session:
            caller = Caller(get_or_create_project(session, INTERNAL_PROJECT), None)
    return caller


CurrentCaller = Annotated[Caller, Depends(get_current_caller)]


def get_current_project(caller: CurrentCaller) -> Project:
    """The project of the bearer key (``get_current_caller``)."""
    return caller.project


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CurrentProject = Annotated[Project, Depends(get_current_project)]
