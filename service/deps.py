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


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_current_project(request: Request) -> Project:
    """The project of the bearer key; 401 when the key is missing, malformed or unknown."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "Missing API key: send 'Authorization: Bearer <key>' (create one with `rft keys create`)."
        )
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
    with store.session() as session:
        if settings.internal_token and hmac.compare_digest(key.strip(), settings.internal_token):
            # Engine processes (LLM judges naming a model this service serves) call the API
            # with the internal token; they act as a project that owns nothing, so they
            # reach base models only.
            return get_or_create_project(session, INTERNAL_PROJECT)
        project = project_for_key(session, key.strip())
    if project is None:
        raise Unauthorized("Incorrect API key provided.")
    return project


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CurrentProject = Annotated[Project, Depends(get_current_project)]
