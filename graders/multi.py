"""``multi``: several graders combined by a formula over their rewards.

Example::

    {"type": "multi", "name": "combo",
     "graders": {"fmt": {"type": "json_match", ...}, "judge": {"type": "score_model", ...}},
     "calculate_output": "0.3 * fmt + 0.7 * judge"}

The formula language is ``graders.formula`` (``+ - * / ^``, parentheses, ``min max abs
floor ceil exp sqrt log``), parsed at validation, never ``eval``'d. Sub-graders cannot be
``multi`` themselves (as in OpenAI's API). Each sub-grader's reward is reported in
``sub_rewards``; a failing sub-grader contributes 0 and its error flag is raised on the
combined result. A math error while evaluating the formula (division by zero,
``log(0)``, an overflow) scores 0 with ``formula_parse_error``: it is the formula that
failed, and OpenAI has no finer flag for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from graders import formula
from graders.base import ERROR_FLAGS, GraderContext, GradeResult, short

if TYPE_CHECKING:
    SubGrader = Any


class MultiGrader(BaseModel):
    """Spec of a ``multi`` grader (``graders`` is the registry's non-multi union)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["multi"]
    name: str
    graders: dict[str, SubGrader]
    calculate_output: str
    _formula: formula.Node = PrivateAttr()

    @model_validator(mode="after")
    def _parse_formula(self) -> MultiGrader:
        if not self.graders:
            raise ValueError("graders: at least one sub-grader is required")
        for key in self.graders:
            if not key.isidentifier():
                raise ValueError(
                    f"graders: key {key!r} must be a name usable in the formula (letters, digits, _)"
                )
        try:
            self._formula = formula.parse(self.calculate_output, set(self.graders))
        except formula.FormulaError as exc:
            raise ValueError(f"calculate_output: formula_parse_error: {exc}") from None
        return self

    @property
    def parsed_formula(self) -> formula.Node:
        """The parsed ``calculate_output``."""
        return self._formula

    def template_fields(self) -> list[tuple[str, str]]:
        """Sub-graders are validated one by one by the registry."""
        return []


def combine(spec: MultiGrader, results: dict[str, GradeResult]) -> GradeResult:
    """Combine sub-results with the formula."""
    errors = dict.fromkeys(ERROR_FLAGS, False)
    details = []
    usage: dict[str, dict[str, int]] = {}
    for key, res in results.items():
        for flag, value in res.errors.items():
            errors[flag] = errors.get(flag, False) or value
        if res.error_detail and res.failed:
            details.append(f"{key}: {res.error_detail}")
        for model, counts in res.token_usage.items():
            bucket = usage.setdefault(model, {})
            for name, count in counts.items():
                bucket[name] = bucket.get(name, 0) + count
    sub = {key: res.reward for key, res in results.items()}
    try:
        reward = formula.evaluate(spec.parsed_formula, sub)
    except (ArithmeticError, ValueError) as exc:
        errors["formula_parse_error"] = True
        details.append(f"calculate_output: {exc}")
        reward = 0.0
    return GradeResult(
        reward=reward,
        sub_rewards=sub,
        errors=errors,
        error_detail=short("; ".join(details)) if details else None,
        token_usage=usage,
    )


def grade(
    spec: MultiGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext
) -> GradeResult:
    """Grade with every sub-grader, then apply the formula."""
    from graders import grade as grade_one  # the registry imports this module

    results = {key: grade_one(sub, sample, item, ctx) for key, sub in spec.graders.items()}
    return combine(spec, results)
