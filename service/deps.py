"""FastAPI dependencies, as ``Annotated`` aliases: ``SettingsDep``, ``StoreDep``, ``CurrentProject``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jobs.store import Project, Store
from service.auth import project_for_key
from service.errors import Unauthorized
from service.settings import Settings


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
    with store.session() as session:
        project = project_for_key(session, key.strip())
    if project is None:
        raise Unauthorized("Incorrect API key provided.")
    return project


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
CurrentProject = Annotated[Project, Depends(get_current_project)]
