"""The API application: ``create_app(settings)`` builds it; it never imports torch."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from jobs.store import Store
from service.errors import install_error_handlers
from service.guards import RequestGuard
from service.routes import audit, chat, downloads, files, health, jobs, models, usage
from service.routes import graders as grader_routes
from service.settings import Settings

log = logging.getLogger(__name__)

# Routes whose body is streamed to disk under ``max_upload_bytes`` rather than buffered
# under ``max_json_body_bytes``: (method, path template).
STREAMED_ROUTES = frozenset({("POST", "/v1/files")})


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
    routers = [m.router for m in (health, files, jobs, grader_routes, models, downloads, chat, audit, usage)]
    for router in routers:
        app.include_router(router)
    # Outermost but for Starlette's ServerErrorMiddleware: it sees each request before
    # any route reads a body byte.
    app.add_middleware(RequestGuard, routes=[r for router in routers for r in router.routes],
                       settings=settings, store=store, streamed=STREAMED_ROUTES)
    return app
