"""Shared fixtures for the graders tests."""

import os

# No test may reach a model hub (cosine / reward_model load local folders only).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from graders import GraderContext  # noqa: E402


@pytest.fixture
def ctx() -> GraderContext:
    """A default operator context."""
    return GraderContext()


def sample_of(text: str, output_json=None) -> dict:
    """A sample in OpenAI's shape."""
    return {"output_text": text, "output_json": output_json}
