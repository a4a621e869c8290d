"""FastAPI dependencies, as ``Annotated`` aliases: ``SettingsDep``, ``StoreDep``, ``CurrentProject``."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from jobs.store import Project, Store
from service.auth import get_or_create_project, project_for_key
from service.errors import Unauthorized
from service.settings import Settings

INTERNAL_PROJECT = "rft:internal"
# Where RequestGuard leaves the project of a checked key, in the request state.
PROJECT_STATE = "rft_project"


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


def authenticate(store: Store, settings: Settings, header: str) -> Project | None:
    """Check an Authorization header without writing anything: the key's project, None
    for the internal token (whose project ``get_current_project`` makes), 401 otherwise.
    ``RequestGuard`` calls it before a body is read."""
    key = bearer_key(header)
    if is_internal_key(settings, key):
        return None
    with store.session() as session:
        project = project_for_key(session, key)
    if project is None:
        raise Unauthorized("Incorrect API key provided.")
    return project


def get_current_project(request: Request) -> Project:
    """The project of the bearer key; 401 when the key is missing, malformed or unknown."""
    checked = request.scope.get("state", {}).get(PROJECT_STATE)
    if checked is not None:
        return checked  # RequestGuard found it before reading the body
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    project = authenticate(store, settings, header)
    if project is None:
        # Engine processes (LLM judges naming a model this service serves) call the API
        # with the internal token; they act as a project that owns nothing, so they
        # reach base models only.
        with store.session() as session:
            project = get_or_create_project(session, INTERNAL_PROJECT)
    return project


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CurrentProject = Annotated[Project, Depends(get_current_project)]
