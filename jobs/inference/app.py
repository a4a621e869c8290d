"""The inference process's FastAPI app: internal endpoints of ``docs/internals.md``."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from . import responses
from .backends import select_backend
from .cache import ModelCache
from .errors import InferenceError, InvalidRequest, Unauthorized, error_response
from .loader import LoadedModel
from .prompts import chat_prompt_ids, completion_prompt_ids, rows_for
from .protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    GradeRequest,
    SamplingFields,
    UnloadRequest,
)
from .settings import InferenceSettings
from .work import GenerationJob

log = logging.getLogger(__name__)


def create_app(settings: InferenceSettings) -> FastAPI:
    """Build the app; the backend (vLLM or transformers) is chosen here once."""
    backend = select_backend(settings)
    cache = ModelCache(backend.load, settings.memory_budget_mb * 2**20, settings.load_timeout_s)
    app = FastAPI(title="rft inference", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cache = cache
    app.state.backend = backend

    def check_token(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
                token.encode(), settings.internal_token.encode()):
            raise Unauthorized("missing or wrong internal token")

    authorized = [Depends(check_token)]

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        return exc.to_response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return error_response(400, f"{param or 'body'}: {first['msg']}", "invalid_request_error", param)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal error in the inference process", "server_error")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "backend": backend.name, "loaded_models": len(cache.loaded_paths),
                "loading_models": len(cache.loading_paths), **backend.stats()}

    @app.post("/internal/chat/completions", dependencies=authorized)
    async def chat_completions(body: ChatCompletionRequest):
        model = await cache.get(body.model_path)
        return await _answer(model, body, [chat_prompt_ids(model, body)], "chat")

    @app.post("/internal/completions", dependencies=authorized)
    async def completions(body: CompletionRequest):
        model = await cache.get(body.model_path)
        prompts = [completion_prompt_ids(model, p) for p in body.prompts()]
        return await _answer(model, body, prompts, "completion")

    @app.post("/internal/unload", dependencies=authorized)
    async def unload(body: UnloadRequest) -> dict:
        return {"model_path": body.model_path, "unloaded": cache.unload(body.model_path)}

    @app.post("/internal/grade", dependencies=authorized)
    async def grade(body: GradeRequest) -> dict:
        # graders is imported here, not at start-up: only torch-needing graders
        # (reward_model) come to this process, and most deployments never send one.
        import graders

        try:
            spec = graders.parse_grader(body.grader)
            ctx = graders.GraderContext.model_validate(body.context)
        except graders.GraderError as exc:
            raise InvalidRequest(exc.message, param=exc.param) from exc
        result = await run_in_threadpool(graders.grade, spec, body.sample, body.item, ctx)
        return result.model_dump()

    return app


async def _answer(model: LoadedModel, body: SamplingFields, prompts: list[tuple[int, ...]],
                  kind: responses.Kind):
    job = GenerationJob(rows_for(model, body, prompts), stream=body.stream)
    model.start(job)
    prompt_tokens = sum(len(p) for p in prompts)
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(
            responses.stream(job, kind, body.model, prompt_tokens, include_usage),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await responses.collect(job, kind, body.model, prompt_tokens)
