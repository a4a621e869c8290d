"""``json_match``: structured-field match of a JSON answer against a reference object.

The reference is an object: inline in the spec, or (usually) taken from the dataset row
with a template such as ``"{{item.reference}}"`` (an object, or a string holding JSON).
The answer is ``sample.output_json``, or the output text parsed as JSON; with ``input``
set it is that template instead (e.g. ``"{{sample.output_json.profile}}"``). An answer
that is not a JSON object scores 0 with ``sample_parse_error``.

Every key of the reference is a scored field. ``fields`` configures some of them; the
rest use ``default_mode`` with weight ``default_weight``. Per-field modes:

- ``exact``: JSON equality (``1 == 1.0``; key order ignored).
- ``normalized`` (default): like exact, but strings compare after Unicode NFKC,
  casefolding and collapsing whitespace (recursively inside lists and objects).
- ``numeric``: both sides numbers (numeric strings such as ``"1,234.5"`` are accepted);
  1.0 when ``|a - b| <= abs_tol + rel_tol * |b|``, else 0.0.
- ``fuzzy``: rapidfuzz ``ratio`` of the normalised texts, 0..1; with ``threshold`` set
  it becomes 1.0 at or above the threshold and 0.0 below.
- ``set``: both sides lists compared as sets of normalised elements; ``set_metric`` is
  ``f1`` (default), ``precision`` or ``recall``. Two empty lists score 1.0.

Missing fields (in the reference, absent from the answer) score ``missing_score``
(default 0.0). Extra fields (in the answer, absent from the reference) are ignored by
default; ``extra_fields: "penalize"`` counts each as a field scored 0 with weight
``default_weight``. A field configured in ``fields`` but absent from a row's reference
is not scored for that row (references may differ per row). The reward is the weighted
mean of the field scores; ``sub_rewards`` holds each reference field's score.

Example spec (the demo job's)::

    {"type": "json_match", "name": "resume_fields",
     "reference": "{{item.reference}}",
     "fields": {
        "university": {"mode": "fuzzy", "weight": 2},
        "programming_languages": {"mode": "set", "set_metric": "f1"},
        "city": {"mode": "normalized"},
        "state": {"mode": "normalized"}},
     "extra_fields": "ignore"}

with an item ``{"reference": {"university": "University of California Berkeley",
"programming_languages": ["python", "c++", "java"], "city": "Los Angeles",
"state": "California"}}``.
"""

from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from rapidfuzz import fuzz

from graders import templates
from graders.base import GraderContext, GradeResult, SampleError

Mode = Literal["exact", "normalized", "numeric", "fuzzy", "set"]

_SPACE = re.compile(r"\s+")


class FieldSpec(BaseModel):
    """How one field is compared and weighted."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "normalized"
    weight: float = Field(default=1.0, ge=0)
    abs_tol: float = Field(default=0.0, ge=0, description="numeric mode")
    rel_tol: float = Field(default=0.0, ge=0, description="numeric mode")
    threshold: float | None = Field(default=None, ge=0, le=1, description="fuzzy mode: pass mark")
    set_metric: Literal["f1", "precision", "recall"] = "f1"


class JsonMatchGrader(BaseModel):
    """Spec of a ``json_match`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["json_match"]
    name: str
    reference: str | dict[str, Any]
    input: str | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    default_mode: Mode = "normalized"
    default_weight: float = Field(default=1.0, ge=0)
    missing_score: float = Field(default=0.0, ge=0, le=1)
    extra_fields: Literal["ignore", "penalize"] = "ignore"
    _default_field: FieldSpec = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> JsonMatchGrader:
        if isinstance(self.reference, dict) and not self.reference:
            raise ValueError("reference: an inline reference object needs at least one field")
        if isinstance(self.reference, str) and not templates.get_template(self.reference).refs:
            # A literal string must at least be a JSON object.
            try:
                parsed = json.loads(self.reference)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise ValueError(
                    "reference: must be an object, JSON text of an object, or a template such as {{item.reference}}"
                )
        # Built once here rather than for every graded sample.
        self._default_field = FieldSpec(mode=self.default_mode, weight=self.default_weight)
        return self

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        out = []
        if isinstance(self.reference, str):
            out.append(("reference", self.reference))
        if self.input is not None:
            out.append(("input", self.input))
        return out


# Short texts (field values, list elements) repeat across samples -- the reference is
# the same for every sample of a row -- so their normal forms are cached. Long texts
# are not: they rarely repeat and would pin memory.
_CACHED_TEXT_CHARS = 256


@functools.lru_cache(maxsize=16384)
def _normalize_short(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalize_text(text: str) -> str:
    """NFKC, casefold, collapse whitespace, strip."""
    if len(text) <= _CACHED_TEXT_CHARS:
        return _normalize_short(text)
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _normalize_value(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, list):
        return [_normalize_value(v) for v in value]
    if isinstance(value, dict):
        return {normalize_text(k): _normalize_value(v) for k, v in value.items()}
    return value


def _json_equal(a: Any, b: Any) -> bool:
    # bool is an int subclass in Python; JSON true must not equal 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b if not (isinstance(a, list | dict) or isinstance(b, list | dict)) else _deep_equal(a, b)


def _deep_equal(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return False


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _element_key(value: Any) -> str:
    # Strings (the common case) skip JSON encoding: '"' + normal form cannot collide with
    # the JSON text of a non-string, which never starts with '"'.
    if isinstance(value, str):
        return '"' + normalize_text(value)
    return json.dumps(_normalize_value(value), sort_keys=True, ensure_ascii=False)


def _text_of(value: Any) -> str:
    return normalize_text(value if isinstance(value, str) else templates.to_text(value))


def score_field(fs: FieldSpec, got: Any, want: Any) -> float:
    """Score one field's answer ``got`` against the reference ``want`` (0..1)."""
    mode = fs.mode
    if mode == "exact":
        return 1.0 if _json_equal(got, want) else 0.0
    if mode == "normalized":
        return 1.0 if _json_equal(_normalize_value(got), _normalize_value(want)) else 0.0
    if mode == "numeric":
        a, b = _as_number(got), _as_number(want)
        if a is None or b is None:
            return 0.0
        return 1.0 if abs(a - b) <= fs.abs_tol + fs.rel_tol * abs(b) else 0.0
    if mode == "fuzzy":
        ratio = fuzz.ratio(_text_of(got), _text_of(want)) / 100.0
        if fs.threshold is None:
            return ratio
        return 1.0 if ratio >= fs.threshold else 0.0
    # set
    if not isinstance(got, list) or not isinstance(want, list):
        return 0.0
    got_set = {_element_key(v) for v in got}
    want_set = {_element_key(v) for v in want}
    if not got_set and not want_set:
        return 1.0
    hits = len(got_set & want_set)
    precision = hits / len(got_set) if got_set else 0.0
    recall = hits / len(want_set) if want_set else 0.0
    if fs.set_metric == "precision":
        return precision
    if fs.set_metric == "recall":
        return recall
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def _reference(spec: JsonMatchGrader, sample: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    ref = spec.reference
    if isinstance(ref, str):
        ref = templates.resolve(ref, sample, item)
        if isinstance(ref, str):
            try:
                ref = json.loads(ref)
            except ValueError:
                raise SampleError("other_error", "json_match reference is not JSON text of an object") from None
    if not isinstance(ref, dict):
        raise SampleError("other_error", f"json_match reference must be an object, got {type(ref).__name__}")
    return ref


def grade(spec: JsonMatchGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Weighted mean of per-field scores; per-field scores in ``sub_rewards``."""
    reference = _reference(spec, sample, item)
    if spec.input is None:
        answer = templates.sample_json(sample)
    else:
        answer = templates.resolve(spec.input, sample, item)
        if isinstance(answer, str):
            try:
                answer = json.loads(answer)
            except ValueError:
                raise SampleError("sample_parse_error", "json_match input is not valid JSON") from None
    if not isinstance(answer, dict):
        raise SampleError("sample_parse_error", f"output is JSON {type(answer).__name__}, expected an object")

    default = spec._default_field
    sub: dict[str, float] = {}
    total = 0.0
    weights = 0.0
    for key, want in reference.items():
        fs = spec.fields.get(key, default)
        score = score_field(fs, answer[key], want) if key in answer else spec.missing_score
        sub[key] = score
        total += fs.weight * score
        weights += fs.weight
    if spec.extra_fields == "penalize":
        weights += spec.default_weight * sum(1 for key in answer if key not in reference)
    reward = total / weights if weights > 0 else 0.0
    return GradeResult(reward=reward, sub_rewards=sub)
