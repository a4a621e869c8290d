"""``string_check``: compare two rendered strings; 1.0 on a match, else 0.0.

Operations (OpenAI's): ``eq`` equal, ``ne`` not equal, ``like`` input contains reference
(case-sensitive), ``ilike`` contains, case-insensitive (Unicode casefold).

Example: ``{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
"reference": "{{item.answer}}", "operation": "eq"}``
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from graders import templates
from graders.base import GraderContext, GradeResult


class StringCheckGrader(BaseModel):
    """Spec of a ``string_check`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["string_check"]
    name: str
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        return [("input", self.input), ("reference", self.reference)]


def grade(spec: StringCheckGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Score 1.0 when ``operation`` holds between rendered input and reference."""
    value = templates.render(spec.input, sample, item)
    ref = templates.render(spec.reference, sample, item)
    op = spec.operation
    if op == "eq":
        ok = value == ref
    elif op == "ne":
        ok = value != ref
    elif op == "like":
        ok = ref in value
    else:
        ok = ref.casefold() in value.casefold()
    return GradeResult(reward=1.0 if ok else 0.0)
