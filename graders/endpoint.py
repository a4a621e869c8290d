"""``endpoint``: POST ``{sample, item, trace_id}`` to a URL and read ``{"score": float}``.

Example: ``{"type": "endpoint", "name": "remote", "url": "https://grader.example.com/score",
"headers": {"authorization": "Bearer ..."}, "rate_limit": 50}``

The URL goes through the SSRF guard (``graders.http``): private, loopback, link-local and
metadata addresses are refused after DNS resolution unless the operator allow-lists
them; no redirects. Requests and answers are capped at 1 MiB; transport errors, 429
and 5xx are retried (``GraderContext.endpoint_max_retries``) with a timeout
(``endpoint_timeout_s``); ``rate_limit`` caps requests per second to the URL from this
process. The score is clipped to ``range``; a missing or non-finite score is
``other_error``; an unreachable or failing endpoint is ``unresponsive_reward_error``.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graders import http
from graders.base import GraderContext, GradeResult, SampleError


class EndpointGrader(BaseModel):
    """Spec of an ``endpoint`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["endpoint"]
    name: str
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    rate_limit: float = Field(default=50.0, gt=0, le=10000, description="requests per second")
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _check(self) -> EndpointGrader:
        if not self.range[0] < self.range[1]:
            raise ValueError("range: must be [low, high] with low < high")
        if any(name.lower() == "host" for name in self.headers):
            raise ValueError("headers: 'host' cannot be set")
        return self

    def template_fields(self) -> list[tuple[str, str]]:
        """No templates: the whole sample and item are sent."""
        return []


def grade(spec: EndpointGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """POST the sample and item; the answer's ``score`` is the reward."""
    url, host, sni = http.guarded_target(spec.url, ctx.endpoint_allowlist)
    http.rate_limiter.wait(spec.url, spec.rate_limit)
    headers = {**spec.headers, "host": host}
    extensions = {"sni_hostname": sni} if spec.url.startswith("https") else None
    answer = http.post_json(
        url,
        {"sample": sample, "item": item, "trace_id": uuid.uuid4().hex},
        headers,
        ctx.endpoint_timeout_s,
        ctx.endpoint_max_retries,
        "unresponsive_reward_error",
        extensions,
    )
    score = answer.get("score") if isinstance(answer, dict) else None
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise SampleError("other_error", f"endpoint answer has no finite 'score': {str(answer)[:200]}")
    return GradeResult(reward=min(max(float(score), spec.range[0]), spec.range[1]))
