"""``label_model``: an LLM judge that picks one of ``labels``; 1.0 when the label is in
``passing_labels``, else 0.0.

Example::

    {"type": "label_model", "name": "tone", "model": "gpt-judge",
     "input": [{"role": "user", "content": "Is this polite? {{sample.output_text}}"}],
     "labels": ["polite", "rude"], "passing_labels": ["polite"]}

A final system message asks for ``{"result": "<label>"}``. The answer (the ``result`` or
``label`` of a JSON object, or the bare text) must equal a label exactly (surrounding
quotes and whitespace aside); anything else is ``model_grader_parse_error``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graders import judge
from graders.base import GraderContext, GradeResult, SampleError
from graders.names import ModelName


class LabelModelGrader(BaseModel):
    """Spec of a ``label_model`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["label_model"]
    name: str
    model: ModelName
    input: list[judge.Message] = Field(min_length=1)
    labels: list[str] = Field(min_length=2)
    passing_labels: list[str] = Field(min_length=1)
    sampling_params: judge.SamplingParams | None = None

    @model_validator(mode="after")
    def _labels(self) -> LabelModelGrader:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: must be distinct")
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels: {unknown} are not in labels")
        return self

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        return judge.template_fields(self.input)


def grade(spec: LabelModelGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Ask the judge for a label."""
    messages = judge.render_messages(spec.input, sample, item)
    messages.append(
        {
            "role": "system",
            "content": "Answer with only a JSON object {\"result\": <label>} where <label> is one of "
            + json.dumps(spec.labels, ensure_ascii=False)
            + ".",
        }
    )
    text, usage = judge.chat(ctx, spec.model, messages, spec.sampling_params)
    value = judge.parse_answer(text)
    label = value.strip().strip("\"'").strip() if isinstance(value, str) else value
    if label not in spec.labels:
        raise SampleError("model_grader_parse_error", f"judge answer is not one of the labels: {text[:200]!r}", usage)
    return GradeResult(reward=1.0 if label in spec.passing_labels else 0.0, token_usage=usage)
