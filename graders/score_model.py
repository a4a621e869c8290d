"""``score_model``: an LLM judge that returns a number, clipped to ``range``.

Example::

    {"type": "score_model", "name": "judge", "model": "gpt-judge",
     "input": [{"role": "system", "content": "Grade the answer from 0 to 1."},
               {"role": "user", "content": "Reference: {{item.answer}}\\nAnswer: {{sample.output_text}}"}],
     "range": [0, 1], "sampling_params": {"temperature": 0}}

A final system message asks for ``{"result": <number>}`` (OpenAI's judges are asked for
the same). Accepted answers: a JSON object with ``result`` or ``score`` (also inside
surrounding text or a code fence) or a bare number. Anything else, NaN or infinity is
``model_grader_parse_error``. See ``graders.judge`` for endpoints and limits.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graders import judge
from graders.base import GraderContext, GradeResult, SampleError
from graders.names import ModelName


class ScoreModelGrader(BaseModel):
    """Spec of a ``score_model`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["score_model"]
    name: str
    model: ModelName
    input: list[judge.Message] = Field(min_length=1)
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None
    sampling_params: judge.SamplingParams | None = None

    @model_validator(mode="after")
    def _range(self) -> ScoreModelGrader:
        if not self.range[0] < self.range[1]:
            raise ValueError("range: must be [low, high] with low < high")
        return self

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        return judge.template_fields(self.input)


def grade(spec: ScoreModelGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Ask the judge for a score and clip it to ``range``."""
    lo, hi = spec.range
    messages = judge.render_messages(spec.input, sample, item)
    messages.append(
        {
            "role": "system",
            "content": f'Answer with only a JSON object {{"result": <number from {lo:g} to {hi:g}>}}.',
        }
    )
    text, usage = judge.chat(ctx, spec.model, messages, spec.sampling_params)
    value = judge.parse_answer(text)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SampleError("model_grader_parse_error", f"judge answer is not a score: {text[:200]!r}", usage) from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SampleError("model_grader_parse_error", f"judge answer is not a finite score: {text[:200]!r}", usage)
    return GradeResult(reward=min(max(float(value), lo), hi), token_usage=usage)
