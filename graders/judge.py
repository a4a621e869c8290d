"""Shared parts of the LLM judges (``score_model``, ``label_model``): the message and
sampling-parameter specs, endpoint resolution, the chat call and answer parsing.

A judge's ``model`` names either an operator-configured endpoint
(``GraderContext.judges[model]``: base URL, key, upstream model name) or a model this
service serves, reached through ``GraderContext.service_base_url`` with the internal
key. Keys live only in the context; they are never part of a spec or a result.
The name is checked to be a name, never a file-system path (``graders.names``); the
service serves only base models to the internal key, so a judge reaches no project's
models.
Calls go through a process-wide concurrency limit (``judge_max_concurrency``), with a
timeout and bounded retries on transport errors, 429 and 5xx.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graders import http, templates
from graders.base import GraderContext, SampleError


class Message(BaseModel):
    """One templated chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str
    type: Literal["message"] | None = None


class SamplingParams(BaseModel):
    """OpenAI's judge sampling parameters."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    max_completions_tokens: int | None = Field(default=None, ge=1, le=32768)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


_semaphores: dict[int, threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def _semaphore(limit: int) -> threading.BoundedSemaphore:
    with _semaphores_lock:
        if limit not in _semaphores:
            _semaphores[limit] = threading.BoundedSemaphore(limit)
        return _semaphores[limit]


def template_fields(messages: list[Message]) -> list[tuple[str, str]]:
    """(field name, template) pairs of the messages' contents."""
    return [(f"input.{i}.content", m.content) for i, m in enumerate(messages)]


def render_messages(messages: list[Message], sample: dict[str, Any], item: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages with every template filled in."""
    return [{"role": m.role, "content": templates.render(m.content, sample, item)} for m in messages]


def chat(
    ctx: GraderContext, model: str, messages: list[dict[str, str]], params: SamplingParams | None
) -> tuple[str, dict[str, dict[str, int]]]:
    """Ask the judge; returns (answer text, token usage keyed by ``model``).

    Raises ``SampleError`` with ``model_grader_server_error`` (unreachable, HTTP error,
    malformed answer) or ``model_grader_refusal_error``.
    """
    if model in ctx.judges:
        endpoint = ctx.judges[model]
        base, key, upstream, timeout = endpoint.base_url, endpoint.api_key, endpoint.model or model, endpoint.timeout_s
    elif ctx.service_base_url:
        base, key, upstream, timeout = ctx.service_base_url, ctx.internal_key, model, ctx.judge_timeout_s
    else:
        raise SampleError(
            "model_grader_server_error",
            f"judge model {model!r} is not an operator-configured judge endpoint and no service URL is set",
        )
    body: dict[str, Any] = {"model": upstream, "messages": messages}
    if params is not None:
        for name in ("temperature", "top_p", "seed", "reasoning_effort"):
            value = getattr(params, name)
            if value is not None:
                body[name] = value
        if params.max_completions_tokens is not None:
            body["max_tokens"] = params.max_completions_tokens
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with _semaphore(ctx.judge_max_concurrency):
        data = http.post_json(
            base.rstrip("/") + "/chat/completions",
            body,
            headers,
            timeout,
            ctx.judge_max_retries,
            "model_grader_server_error",
        )
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise SampleError("model_grader_server_error", "judge answer has no choices[0].message") from None
    if message.get("refusal"):
        raise SampleError("model_grader_refusal_error", f"judge refused: {str(message['refusal'])[:200]}")
    content = message.get("content")
    if not isinstance(content, str):
        raise SampleError("model_grader_parse_error", "judge answer has no text content")
    usage = data.get("usage") or {}
    counts = {
        name: int(usage[name])
        for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        if isinstance(usage.get(name), int)
    }
    return content, {model: counts}


def parse_answer(text: str) -> Any:
    """The judge's answer: the ``result`` (or ``score``/``label``) of a JSON object found
    in the text, a bare JSON value, or the stripped text itself."""
    stripped = _FENCE.sub("", text.strip()).strip()
    candidates = [stripped]
    found = _JSON_OBJECT.search(stripped)
    if found:
        candidates.append(found.group(0))
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            for key in ("result", "score", "label"):
                if key in value:
                    return value[key]
            continue
        return value
    return stripped
