"""Graders alpha API: ``POST /v1/fine_tuning/alpha/graders/validate`` and ``/run``.

Both take OpenAI's request bodies and answer in OpenAI's shapes (the ``openai`` client's
``fine_tuning.alpha.graders`` types). Grading runs in a worker thread so a slow grader
(a sandboxed ``python`` grader, an LLM judge) never blocks the event loop. Graders that
need torch (``graders.needs_engine``: ``reward_model``, ``cosine`` similarity, also
inside a ``multi``) never run here: the API process must not import torch, so they are
forwarded to the inference process's ``POST /internal/grade``.

Slow graders (``SLOW_TYPES``) take a slot of the app's ``FairLimiter``: a global cap and
a per-project cap, waiters served round-robin by project, so one project's flood of slow
calls cannot make another project wait. Quick in-process graders take no slot. When the
client goes away mid-request, the request's ``CancelToken`` is cancelled (a sandbox
registered with it is killed), the request stops waiting for a slot, and a held slot is
given back as soon as the grading thread returns. A project with
``grader_run_waiting_per_project`` requests already waiting for a slot gets a 429 instead
of one more waiter (each holds its body in memory).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

import graders
from graders.base import ERROR_FLAGS, GradeResult
from graders.cancel import CancelToken, use_token
from service import inference_client, job_requests, quotas
from service.deps import CurrentProject, SettingsDep, StoreDep
from service.errors import ApiError, InvalidRequest, ServiceUnavailable
from service.fair_limiter import FairLimiter
from service.grading import build_grader_context, grader_context
from service.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])

# A sample bigger than this is not a model output anyone should grade interactively.
MAX_SAMPLE_CHARS = 4 * 1024 * 1024

# Grader types that take a /run slot, written out by hand: they start a sandbox
# (python, code_exec), wait on HTTP for seconds (score_model, label_model, endpoint), or
# run sympy with no timeout off the main thread (math_match, see graders.math_match).
# The rest (string_check, json_match, text_similarity without cosine) finish in
# microseconds and run at once. A multi is slow when any sub-grader is. (Engine graders,
# needs_engine, are forwarded to the inference process and take no slot here.)
SLOW_TYPES = frozenset(
    {"python", "code_exec", "score_model", "label_model", "endpoint", "math_match"}
)
# Answer to a request whose client went away (nginx's "client closed request"); nobody
# reads it, it only keeps the access log honest.
CLIENT_GONE_STATUS = 499


class ValidateBody(BaseModel):
    """``POST /validate`` body."""

    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any]


class RunBody(BaseModel):
    """``POST /run`` body (``item`` fills the ``item`` namespace; default ``{}``)."""

    model_config = ConfigDict(extra="forbid")

    grader: dict[str, Any]
    model_sample: str = Field(max_length=MAX_SAMPLE_CHARS)
    item: dict[str, Any] | None = None


def _parse(grader: dict[str, Any]) -> Any:
    """The grader's spec; a 400 naming ``grader.<field>`` when it is invalid."""
    try:
        return graders.parse_grader(grader)
    except graders.GraderError as exc:
        raise _invalid(exc.message, exc.param) from None


async def _check_models(store: Any, project: Any, settings: Settings, spec: Any) -> None:
    """The models the grader names must be ones this project may reach (a 400 naming
    ``grader.<field>`` otherwise, another project's reading like an unknown one)."""
    if not job_requests.grader_models(spec, "grader"):
        return  # most graders name no model: no database round trip

    def check() -> None:
        with store.session() as session:
            job_requests.check_grader_models(session, project, settings, spec, "grader")

    await anyio.to_thread.run_sync(check)


def _invalid(message: str, param: str | None) -> InvalidRequest:
    full = f"grader.{param}" if param else "grader"
    return InvalidRequest(f"Invalid grader ({full}): {message}", param=full, code="invalid_grader")


def build_sample(model_sample: str) -> dict[str, Any]:
    """OpenAI's sample namespace for a string sample: ``output_json`` is the text parsed
    as JSON when it is valid JSON, else ``None``."""
    try:
        parsed = json.loads(model_sample)
    except ValueError:
        parsed = None
    return {"output_text": model_sample, "output_json": parsed}


def _sampled_model(spec: Any) -> str | None:
    if spec.type in ("score_model", "label_model"):
        return spec.model
    if spec.type == "multi":
        judges = [
            s.model for s in spec.graders.values() if s.type in ("score_model", "label_model")
        ]
        return judges[0] if len(set(judges)) == 1 else None
    return None


def _total_tokens(usage: dict[str, dict[str, int]]) -> int | None:
    if not usage:
        return None
    total = 0
    for counts in usage.values():
        total += counts.get(
            "total_tokens", counts.get("prompt_tokens", 0) + counts.get("completion_tokens", 0)
        )
    return total


def run_response(spec: Any, result: GradeResult) -> dict[str, Any]:
    """OpenAI's ``GraderRunResponse`` for ``result``.

    ``metadata.errors`` carries every OpenAI flag plus its ``*_details`` fields;
    ``metadata.error_detail`` (an rft extension) holds the detail whatever the flag,
    so no failure reason is lost.
    """
    errors: dict[str, Any] = {flag: bool(result.errors.get(flag, False)) for flag in ERROR_FLAGS}
    detail = result.error_detail if result.failed else None
    errors["model_grader_server_error_details"] = (
        detail if errors["model_grader_server_error"] else None
    )
    errors["python_grader_runtime_error_details"] = (
        detail if errors["python_grader_runtime_error"] else None
    )
    errors["python_grader_server_error_type"] = (
        detail if errors["python_grader_server_error"] else None
    )
    return {
        "reward": result.reward,
        "metadata": {
            "name": spec.name,
            "type": spec.type,
            "errors": errors,
            "error_detail": detail,
            "execution_time": result.execution_time,
            "scores": dict(result.sub_rewards),
            "token_usage": _total_tokens(result.token_usage),
            "sampled_model_name": _sampled_model(spec),
        },
        "sub_rewards": dict(result.sub_rewards),
        "model_grader_token_usage_per_model": {
            model: dict(c) for model, c in result.token_usage.items()
        },
    }


def is_slow(spec: Any) -> bool:
    """True when grading ``spec`` takes a /run slot (``SLOW_TYPES``, or a multi with one)."""
    if spec.type == "multi":
        return any(is_slow(sub) for sub in spec.graders.values())
    return spec.type in SLOW_TYPES


async def get_run_limiter(request: Request) -> FairLimiter:
    """The app's /run limiter, made from its settings on first use (async: on the event
    loop, so two first requests cannot both make one)."""
    state = request.app.state
    try:
        return state.grader_run_limiter
    except AttributeError:
        settings: Settings = state.settings
        state.grader_run_limiter = FairLimiter(
            settings.grader_run_slots, settings.grader_run_slots_per_project
        )
        return state.grader_run_limiter


RunLimiterDep = Annotated[FairLimiter, Depends(get_run_limiter)]


async def _grade_here(
    spec: Any, sample: dict, item: dict, settings: Settings, token: CancelToken
) -> GradeResult:
    ctx = build_grader_context(settings)

    def work() -> GradeResult:
        # Set here, in the thread, so the sandbox sees the token whatever the thread
        # runner does with contextvars.
        with use_token(token):
            return graders.grade(spec, sample, item, ctx)

    # Not abandoned on cancellation: the caller's slot is held until the thread returns.
    return await anyio.to_thread.run_sync(work)


async def _unless_client_leaves(
    request: Request, token: CancelToken, work: Callable[[], Awaitable[GradeResult]]
) -> GradeResult | None:
    """``await work()``, or None when the client disconnects first.

    On disconnect ``work`` is cancelled (it stops waiting for a slot; inside a worker
    thread it returns once the thread does) and so is the token, whose callbacks (a
    sandbox's kill) run in a worker thread, off the event loop.
    """
    result: GradeResult | None = None
    error: Exception | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        # FastAPI has read the whole body: the next message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        # Cancel the scope first: a request granted a slot in this instant must not
        # start grading with a token that is already cancelled.
        scope.cancel()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(token.cancel)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            result = await work()
        except Exception as exc:
            # Raised below: out of the task group, which would wrap it in an ExceptionGroup.
            error = exc
        tg.cancel_scope.cancel()
    if token.cancelled:
        return None
    if error is not None:
        raise error
    return result


async def _grade_on_engine(
    grader: dict, sample: dict, item: dict, settings: Settings
) -> GradeResult:
    """Forward to the inference process; 503 + Retry-After when it is absent or away."""
    body = {"grader": grader, "sample": sample, "item": item, "context": grader_context(settings)}
    resp = await inference_client.forward(settings, "/internal/grade", body, stream=False)
    try:
        data = json.loads(resp.body)
    except ValueError:
        data = None
    if resp.status_code == 200 and isinstance(data, dict):
        return GradeResult.model_validate(data)
    error = (
        data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), dict) else {}
    )
    if resp.status_code == 400:
        raise _invalid(
            str(error.get("message") or "rejected by the inference process"), error.get("param")
        )
    if resp.status_code == 503:
        retry = resp.headers.get("retry-after", inference_client.RETRY_AFTER_S)
        raise ServiceUnavailable(
            "The inference process is not ready to grade; retry shortly.",
            headers={"Retry-After": retry},
        )
    log.error(
        "inference process answered %d to /internal/grade: %s",
        resp.status_code,
        bytes(resp.body)[:500],
    )
    raise ApiError("The inference process failed to run this grader.")


@router.post("/validate")
async def validate(body: ValidateBody, project: CurrentProject, settings: SettingsDep, store: StoreDep) -> dict:
    """Check a grader definition; answers ``{"grader": ...}`` or a 400 naming the field."""
    spec = _parse(body.grader)
    await _check_models(store, project, settings, spec)
    return {"grader": spec.model_dump(mode="json", exclude_unset=True)}


@router.post("/run")
async def run(
    body: RunBody,
    project: CurrentProject,
    settings: SettingsDep,
    limiter: RunLimiterDep,
    request: Request,
    store: StoreDep,
) -> dict:
    """Grade ``model_sample`` against ``item``; answers OpenAI's ``GraderRunResponse``.

    A grader that fails on this sample is not a request error: the reward is 0 and the
    matching flag is set in ``metadata.errors``. When the client disconnects first, the
    grading is cancelled and the (unread) answer is a bare 499.
    """
    spec = _parse(body.grader)
    await _check_models(store, project, settings, spec)
    sample = build_sample(body.model_sample)
    item = body.item or {}
    token = CancelToken()

    async def work() -> GradeResult:
        if graders.needs_engine(spec):
            return await _grade_on_engine(body.grader, sample, item, settings)
        if not is_slow(spec):
            return await _grade_here(spec, sample, item, settings, token)
        waiting_cap = settings.grader_run_waiting_per_project
        if waiting_cap and limiter.waiting_for(project.id) >= waiting_cap:
            raise quotas.too_many_waiting(settings)
        async with limiter.slot(project.id):
            return await _grade_here(spec, sample, item, settings, token)

    start = time.monotonic()
    result = await _unless_client_leaves(request, token, work)
    if result is None:
        log.info(
            "client left /graders/run after %.1fs (project %s, %s grader %r): grading cancelled",
            time.monotonic() - start,
            project.name,
            spec.type,
            spec.name,
        )
        return Response(status_code=CLIENT_GONE_STATUS)
    if result.failed:
        log.info("grader %r (%s) failed on a sample: %s", spec.name, spec.type, result.error_detail)
    return run_response(spec, result)
