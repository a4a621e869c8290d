"""Graders alpha API: ``POST /v1/fine_tuning/alpha/graders/validate`` and ``/run``.

Both take OpenAI's request bodies and answer in OpenAI's shapes (the ``openai`` client's
``fine_tuning.alpha.graders`` types). Grading runs in a worker thread so a slow grader
(a sandboxed ``python`` grader, an LLM judge) never blocks the event loop. Graders that
need torch (``graders.needs_engine``: ``reward_model``, ``cosine`` similarity, also
inside a ``multi``) never run here: the API process must not import torch, so they are
forwarded to the inference process's ``POST /internal/grade``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

import graders
from graders.base import ERROR_FLAGS, GradeResult
from service import inference_client
from service.deps import CurrentProject, SettingsDep
from service.errors import ApiError, InvalidRequest, ServiceUnavailable
from service.grading import grader_context
from service.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])

# A sample bigger than this is not a model output anyone should grade interactively.
MAX_SAMPLE_CHARS = 4 * 1024 * 1024
# At most this many gradings at once in the API process: a python grader starts a
# sandbox (up to the memory cap each), so unbounded concurrency would be a DoS lever.
MAX_CONCURRENT_RUNS = 8

_limiter: anyio.CapacityLimiter | None = None


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


async def _grade_here(spec: Any, sample: dict, item: dict, settings: Settings) -> GradeResult:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(MAX_CONCURRENT_RUNS)
    ctx = graders.GraderContext.model_validate(grader_context(settings))
    return await anyio.to_thread.run_sync(graders.grade, spec, sample, item, ctx, limiter=_limiter)


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
async def validate(body: ValidateBody, project: CurrentProject) -> dict:
    """Check a grader definition; answers ``{"grader": ...}`` or a 400 naming the field."""
    spec = _parse(body.grader)
    return {"grader": spec.model_dump(mode="json", exclude_unset=True)}


@router.post("/run")
async def run(body: RunBody, project: CurrentProject, settings: SettingsDep) -> dict:
    """Grade ``model_sample`` against ``item``; answers OpenAI's ``GraderRunResponse``.

    A grader that fails on this sample is not a request error: the reward is 0 and the
    matching flag is set in ``metadata.errors``.
    """
    spec = _parse(body.grader)
    sample = build_sample(body.model_sample)
    item = body.item or {}
    if graders.needs_engine(spec):
        result = await _grade_on_engine(body.grader, sample, item, settings)
    else:
        result = await _grade_here(spec, sample, item, settings)
    if result.failed:
        log.info("grader %r (%s) failed on a sample: %s", spec.name, spec.type, result.error_detail)
    return run_response(spec, result)
