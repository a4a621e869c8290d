"""The API's exception tree and its one JSON envelope.

    ApiError                      (500 server_error)
    ├── InvalidRequest            (400 invalid_request_error; names the field in ``param``)
    ├── Unauthorized              (401 invalid_api_key)
    ├── NotFound                  (404; also for other projects' objects)
    ├── Conflict                  (409)
    ├── PayloadTooLarge           (413)
    ├── RateLimited               (429 rate_limit_exceeded, with Retry-After)
    │   └── QuotaExceeded         (429 quota_exceeded: a project quota, see service.quotas)
    └── ServiceUnavailable        (503, with Retry-After)

Every error, FastAPI's own validation errors included, is rendered as
``{"error": {"message", "type", "param", "code"}}`` so OpenAI clients parse it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Base of every error the API returns on purpose."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}


class InvalidRequest(ApiError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class NotFound(ApiError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class Conflict(ApiError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(ApiError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class RateLimited(ApiError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class QuotaExceeded(RateLimited):
    """A project is at one of its quotas (``service.quotas``)."""

    default_code = "quota_exceeded"


class ServiceUnavailable(ApiError):
    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


def error_body(message: str, error_type: str, param: str | None, code: str | None) -> dict:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def server_error_body() -> dict:
    """The 500 envelope. Generic on purpose: internals go to the log, not the client."""
    return error_body("The server had an error processing the request.", "server_error", None, None)


def _loc_to_param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    """Render every error raised in the app as the one envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.error_type, exc.param, exc.code),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = _loc_to_param(tuple(first.get("loc", ())))
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(
            error_body(message, "invalid_request_error", param, "invalid_request"),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", None, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Reached only by errors outside service.guards.RequestGuard, which answers the
        # routes' own unexpected errors itself (so the connection is kept).
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(server_error_body(), status_code=500)
