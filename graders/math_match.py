"""``math_match``: is the final answer mathematically equal to the reference? (RLVR)

Example: ``{"type": "math_match", "name": "answer", "input": "{{sample.output_text}}",
"reference": "{{item.answer}}"}``

Uses Hugging Face's ``math-verify``: the answer is extracted from the completion as its
docs describe (``\\boxed{...}`` first, then LaTeX / plain expressions, the last number
as a fallback) and compared with the parsed reference symbolically and numerically
(``float_rounding`` decimals), so ``\\frac{1}{2}``, ``0.5`` and ``1/2`` match. Score 1.0 or
0.0; a completion with no extractable answer scores 0.0 (not an error); a reference that
cannot be parsed is ``other_error``.

math-verify's own timeout relies on ``SIGALRM``, which only works in the main thread; off
the main thread it runs without one, so inputs are cut to their last ``MAX_CHARS``
characters to bound the work (and its "Timeout is disabled" warning, expected there, is
filtered out of the log rather than repeated for every sample).

A reference counts as parsed only when math-verify extracted a mathematical object from
it: for text it cannot read it returns just the raw string, which used to make every
sample score 0 without any error flag.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from math_verify import parse, verify
from pydantic import BaseModel, ConfigDict, Field

from graders import templates
from graders.base import GraderContext, GradeResult, SampleError

MAX_CHARS = 4000
TIMEOUT_S = 5


class _NoTimeoutWarning(logging.Filter):
    """Drops math-verify's per-call warning that it runs without a timeout (by design
    off the main thread, see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())


class MathMatchGrader(BaseModel):
    """Spec of a ``math_match`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["math_match"]
    name: str
    input: str = "{{sample.output_text}}"
    reference: str = "{{item.answer}}"
    float_rounding: int = Field(default=6, ge=0, le=15)

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        return [("input", self.input), ("reference", self.reference)]


def grade(spec: MathMatchGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """1.0 when the extracted answer equals the reference."""
    answer_text = templates.render(spec.input, sample, item)[-MAX_CHARS:]
    reference_text = templates.render(spec.reference, sample, item)[-MAX_CHARS:]
    timeout = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    gold = parse(reference_text, parsing_timeout=timeout)
    if not gold and "$" not in reference_text:
        gold = parse(f"${reference_text}$", parsing_timeout=timeout)
    if not any(not isinstance(g, str) for g in gold):
        raise SampleError("other_error", f"math_match could not parse the reference {reference_text[:100]!r}")
    answer = parse(answer_text, parsing_timeout=timeout)
    if not answer:
        return GradeResult(reward=0.0, error_detail="no final answer found in the output")
    ok = verify(gold, answer, float_rounding=spec.float_rounding, timeout_seconds=timeout)
    return GradeResult(reward=1.0 if ok else 0.0)
