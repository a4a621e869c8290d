"""Errors of the inference process, rendered in OpenAI's envelope.

    InferenceError                 (500, server_error)
    ├── InvalidRequest             (400, invalid_request_error; names the field)
    │   └── ContextLengthExceeded  (400, code context_length_exceeded)
    ├── Unauthorized               (401)
    ├── ModelNotFound              (404, model_path is not a model folder)
    ├── ModelLoading               (503 + Retry-After: still loading past the wait)
    └── ModelTooLarge              (503: the folder does not fit the memory budget)
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


class InferenceError(Exception):
    """Base of every error this process reports to its caller."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After for 503s)."""
        return {}

    def to_response(self) -> JSONResponse:
        """Render as OpenAI's error envelope with the fitting status."""
        return error_response(self.status_code, self.message, self.error_type, self.param,
                              self.code, self.headers())


class InvalidRequest(InferenceError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(InferenceError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_internal_token"


class ModelNotFound(InferenceError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ModelLoading(InferenceError):
    status_code = 503
    code = "model_loading"

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelTooLarge(InferenceError):
    status_code = 503
    code = "model_exceeds_memory_budget"


def error_response(status: int, message: str, error_type: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)
