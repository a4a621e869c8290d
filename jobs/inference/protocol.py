"""Request bodies of the internal endpoints: OpenAI's fields plus ``model_path``.

Fields OpenAI defines that this server cannot honour (logprobs, tools, penalties, ...)
are refused with a 400 naming the field rather than ignored, so a client never gets a
silently different answer from the one it asked for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import InvalidRequest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class ResponseFormat(_Strict):
    type: Literal["text", "json_object"]


class SamplingFields(_Strict):
    """The OpenAI sampling fields both endpoints share, plus the folder to serve."""

    model: str = Field(min_length=1)
    model_path: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=64)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    user: str | None = None
    # Accepted only at their neutral values: anything else would change the answer in a
    # way this server does not implement.
    frequency_penalty: Literal[0] | None = None
    presence_penalty: Literal[0] | None = None
    logprobs: Literal[False] | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        if v == "" or (isinstance(v, list) and "" in v):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> tuple[str, ...]:
        """Stop sequences as a tuple (empty when none)."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def requested_max_tokens(self) -> int | None:
        """The completion-token cap the caller asked for, if any."""
        return self.max_tokens

    def max_tokens_param(self) -> str:
        """The field that carries the cap, for error messages."""
        return "max_tokens"

    def wants_json(self) -> bool:
        """True when the output must be one JSON object."""
        return False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message content as plain text; only text parts are supported."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest("only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    """Body of ``POST /internal/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None

    @model_validator(mode="after")
    def _one_cap(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_completion_tokens or max_tokens, not both")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type == "json_object"

    def chat_messages(self) -> list[dict[str, str]]:
        """Messages as the chat template expects them (OpenAI's ``developer`` role is the
        system role of open models' templates)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in self.messages]


class CompletionRequest(SamplingFields):
    """Body of ``POST /internal/completions``: ``prompt`` is one string or a list."""

    prompt: str | list[str]
    echo: Literal[False] = False
    suffix: None = None

    def prompts(self) -> list[str]:
        """The prompts as a list; each gets ``n`` choices, indexed prompt-major."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not prompts:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        return prompts


class UnloadRequest(_Strict):
    model_path: str = Field(min_length=1)


class GradeRequest(_Strict):
    grader: dict[str, Any]
    sample: dict[str, Any]
    item: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
