"""The API application: ``create_app(settings)`` builds it; it never imports torch."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from jobs.store import Store
from service.errors import install_error_handlers
from service.routes import chat, downloads, files, health, jobs, models
from service.routes import graders as grader_routes
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """Build the app for ``settings``; creates the data dir and migrates the database."""
    settings.ensure_dirs()
    store = store or Store(settings.resolved_database_url)
    store.migrate()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        store.dispose()

    app = FastAPI(title="rft", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    install_error_handlers(app)
    for module in (health, files, jobs, grader_routes, models, downloads, chat):
        app.include_router(module.router)
    return app
