"""OpenAI's response shapes: whole bodies for ``stream: false``, SSE chunks otherwise."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Literal

from .errors import InferenceError
from .work import GenerationJob, JobFailed

Kind = Literal["chat", "completion"]

_FAILED = "generation failed; see the inference process log"


def new_id(kind: Kind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


async def collect(job: GenerationJob, kind: Kind, model: str, prompt_tokens: int) -> dict:
    """Wait for every row and build the whole response body."""
    texts = [""] * len(job.rows)
    reasons: list[str | None] = [None] * len(job.rows)
    tokens = [0] * len(job.rows)
    async for event in job.events():
        if isinstance(event, JobFailed):
            raise InferenceError(_FAILED)
        texts[event.index] += event.text
        reasons[event.index] = event.finish_reason
        tokens[event.index] = event.completion_tokens
    if kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": t, "refusal": None},
                    "logprobs": None, "finish_reason": r}
                   for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]
        obj = "chat.completion"
    else:
        choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                   for i, (t, r) in enumerate(zip(texts, reasons, strict=True))]
        obj = "text_completion"
    return {"id": new_id(kind), "object": obj, "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": choices,
            "usage": usage(prompt_tokens, sum(tokens))}


async def stream(job: GenerationJob, kind: Kind, model: str, prompt_tokens: int,
                 include_usage: bool) -> AsyncIterator[bytes]:
    """SSE chunks as OpenAI sends them, ending with ``data: [DONE]``. Chat choices open
    with a role delta; each choice's last chunk carries its finish_reason; with
    ``stream_options.include_usage`` a last chunk with empty choices carries usage."""
    base = {"id": new_id(kind), "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "system_fingerprint": None}

    def chunk(index: int, text: str | None, reason: str | None, role: bool = False) -> bytes:
        if kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
        return sse({**base, "choices": [choice]})

    if kind == "chat":
        for i in range(len(job.rows)):
            yield chunk(i, None, None, role=True)
    tokens = [0] * len(job.rows)
    try:
        async for event in job.events():
            if isinstance(event, JobFailed):
                yield sse({"error": {"message": _FAILED, "type": "server_error", "param": None, "code": None}})
                return
            tokens[event.index] = event.completion_tokens
            if event.text or event.finish_reason:
                yield chunk(event.index, event.text, event.finish_reason)
    finally:
        # The client went away (or all rows are done): rows still running stop at
        # their next token.
        job.cancelled = True
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage(prompt_tokens, sum(tokens))})
    yield b"data: [DONE]\n\n"


def sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
