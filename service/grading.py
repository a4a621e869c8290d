"""The grader context (sandbox limits, judge endpoints, allow-lists) built from settings."""

from __future__ import annotations

from graders import GraderContext
from service.settings import Settings


def grader_context(settings: Settings) -> dict:
    """What graders may use on this server, as the plain dict engine processes receive.

    It holds judge keys: it goes to engine processes through their environment and is
    never returned by the API.
    """
    return build_grader_context(settings).model_dump()


def build_grader_context(settings: Settings) -> GraderContext:
    """``grader_context`` as the model, for grading in this process."""
    return GraderContext(
        sandbox_unsafe=settings.allow_unsafe_sandbox,
        judges=settings.judge_endpoints,
        service_base_url=f"http://127.0.0.1:{settings.port}/v1",
        internal_key=settings.internal_token,
        endpoint_allowlist=settings.endpoint_allowlist,
        reward_models=settings.reward_models,
    )
