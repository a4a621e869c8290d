"""Graders: turn a model sample and a dataset row into a reward.

Public API (the contract in docs/internals.md)::

    from graders import parse_grader, validate_grader, grade, grade_batch, GraderContext, GradeResult

    spec = parse_grader(obj)                      # raises GraderError(message, param)
    validate_grader(spec, item_keys={"answer"})   # template variables vs dataset keys
    res = grade(spec, sample, item, ctx)          # never raises for a bad sample
    results = grade_batch(spec, samples, items, ctx)   # concurrent, order kept

``GraderError.param`` is a dotted path relative to the grader object (``"operation"``,
``"graders.acc.reference"``); callers prefix it with where the grader sits in their
request (``"grader."``, ``"method.reinforcement.grader."``).

The registry below is written out by hand: a discriminated union of the spec models and
a type -> grade-function table. Adding a type means one module plus one line in each.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from graders import (
    code_exec,
    endpoint,
    json_match,
    label_model,
    math_match,
    multi,
    python,
    reward_model,
    score_model,
    string_check,
    templates,
    text_similarity,
)
from graders.base import GraderContext, GraderError, GradeResult, SampleError

__all__ = [
    "check_item",
    "checks_items",
    "GradeResult",
    "GraderContext",
    "GraderError",
    "grade",
    "grade_batch",
    "needs_engine",
    "parse_grader",
    "validate_grader",
]

logger = logging.getLogger(__name__)

# Every type but multi: what a multi grader may contain (OpenAI forbids nesting).
SubGraderSpec = Annotated[
    string_check.StringCheckGrader
    | text_similarity.TextSimilarityGrader
    | json_match.JsonMatchGrader
    | math_match.MathMatchGrader
    | python.PythonGrader
    | code_exec.CodeExecGrader
    | score_model.ScoreModelGrader
    | label_model.LabelModelGrader
    | endpoint.EndpointGrader
    | reward_model.RewardModelGrader,
    Field(discriminator="type"),
]
multi.MultiGrader.model_rebuild(_types_namespace={"SubGrader": SubGraderSpec})

GraderSpec = Annotated[
    string_check.StringCheckGrader
    | text_similarity.TextSimilarityGrader
    | json_match.JsonMatchGrader
    | math_match.MathMatchGrader
    | python.PythonGrader
    | code_exec.CodeExecGrader
    | score_model.ScoreModelGrader
    | label_model.LabelModelGrader
    | endpoint.EndpointGrader
    | reward_model.RewardModelGrader
    | multi.MultiGrader,
    Field(discriminator="type"),
]

GradeFunction = Callable[[Any, dict[str, Any], dict[str, Any], GraderContext], GradeResult]

GRADE_FUNCTIONS: dict[str, GradeFunction] = {
    "string_check": string_check.grade,
    "text_similarity": text_similarity.grade,
    "json_match": json_match.grade,
    "math_match": math_match.grade,
    "python": python.grade,
    "code_exec": code_exec.grade,
    "score_model": score_model.grade,
    "label_model": label_model.grade,
    "endpoint": endpoint.grade,
    "reward_model": reward_model.grade,
    "multi": multi.grade,
}

# Sandboxed types grade a batch on a pool of warm sandboxes.
BATCH_FUNCTIONS = {
    "python": python.grade_many,
    "code_exec": code_exec.grade_many,
}

GRADER_TYPES: tuple[str, ...] = tuple(GRADE_FUNCTIONS)

_ADAPTER: TypeAdapter[Any] = TypeAdapter(GraderSpec)
_DEFAULT_CONTEXT = GraderContext()


def _param_from_loc(loc: tuple[Any, ...]) -> str:
    # Discriminated unions put the tag ("string_check") into the error location; drop it
    # so the path matches the user's JSON.
    parts = []
    for i, p in enumerate(loc):
        # Top-level tag, and the tag after "graders.<key>" inside a multi.
        if p in GRADER_TYPES and (i == 0 or (i >= 2 and loc[i - 2] == "graders")):
            continue
        parts.append(str(p))
    return ".".join(parts)


def parse_grader(obj: Any) -> Any:
    """Validate a grader JSON object and return its spec model.

    Checks structure, field types, template syntax and (for ``multi``) the formula.
    Raises ``GraderError`` whose ``param`` names the first bad field.
    """
    if not isinstance(obj, dict):
        raise GraderError("grader must be a JSON object", None)
    kind = obj.get("type")
    if kind not in GRADER_TYPES:
        raise GraderError(
            f"unknown grader type {kind!r}; expected one of: {', '.join(GRADER_TYPES)}",
            "type",
        )
    try:
        spec = _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = _param_from_loc(tuple(err["loc"]))
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # A sub-grader of a multi without a valid type: name its "type" field.
            param = f"{param}.type" if param else "type"
            tag = (err.get("ctx") or {}).get("tag")
            if tag == "multi":
                message = f"{param}: a multi grader cannot contain another multi grader"
            elif tag is None:
                message = f"missing required field '{param}'"
            else:
                message = f"{param}: unknown grader type {tag!r}; expected one of: " + ", ".join(
                    t for t in GRADER_TYPES if t != "multi"
                )
        elif err["type"] == "extra_forbidden":
            message = f"unknown field '{param}' for a {kind} grader"
        elif err["type"] == "missing":
            message = f"missing required field '{param}' for a {kind} grader"
        else:
            text = str(err["msg"]).removeprefix("Value error, ")
            head, sep, rest = text.partition(": ")
            # Model validators name their field at the start of the message.
            if sep and head.replace(".", "").replace("_", "").isalnum() and " " not in head:
                param = f"{param}.{head}" if param else head
                text = rest
            message = f"{param or 'grader'}: {text}"
        raise GraderError(message, param or None) from None
    validate_grader(spec, None)
    return spec


def validate_grader(spec: Any, item_keys: set[str] | None = None) -> None:
    """Check the spec's templates; with ``item_keys`` (the dataset's keys) also check that
    every ``{{item.<key>}}`` exists. Raises ``GraderError`` naming the field."""
    _validate(spec, item_keys, "")


def _validate(spec: Any, item_keys: set[str] | None, prefix: str) -> None:
    for field, text in spec.template_fields():
        templates.check(text, prefix + field, item_keys)
    if spec.type == "multi":
        for key, sub in spec.graders.items():
            _validate(sub, item_keys, f"{prefix}graders.{key}.")


def checks_items(spec: Any) -> bool:
    """True when ``check_item`` has something to check for this grader (a ``code_exec``
    whose cases come from the rows, also inside a ``multi``)."""
    if spec.type == "multi":
        return any(checks_items(sub) for sub in spec.graders.values())
    return spec.type == "code_exec" and isinstance(spec.tests, str)


def check_item(spec: Any, item: dict[str, Any]) -> None:
    """Check what one dataset row gives the grader, before any sample exists (today: a
    ``code_exec``'s test cases, which must be checkable without showing the solution the
    answer). Raises ``GraderError`` naming the field."""
    _check_item(spec, item, "")


def _check_item(spec: Any, item: dict[str, Any], prefix: str) -> None:
    if spec.type == "multi":
        for key, sub in spec.graders.items():
            _check_item(sub, item, f"{prefix}graders.{key}.")
    elif spec.type == "code_exec":
        try:
            code_exec.check_item(spec, item)
        except ValueError as exc:
            raise GraderError(str(exc), prefix + "tests") from None


def needs_engine(spec: Any) -> bool:
    """True when grading needs torch: a ``reward_model`` or a ``cosine``
    ``text_similarity`` (sentence embeddings), also inside a ``multi``."""
    if spec.type == "reward_model":
        return True
    if spec.type == "text_similarity" and spec.evaluation_metric == "cosine":
        return True
    if spec.type == "multi":
        return any(needs_engine(sub) for sub in spec.graders.values())
    return False


def _finish(result: GradeResult, start: float) -> GradeResult:
    if not math.isfinite(result.reward):
        result = GradeResult.failure("other_error", f"grader produced a non-finite reward ({result.reward})")
    result.execution_time = time.perf_counter() - start
    return result


def grade(
    spec: Any, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext | None = None
) -> GradeResult:
    """Grade one sample against its dataset row.

    A failure on this sample never raises: the result has reward 0, the matching error
    flag set and ``error_detail`` filled. ``sample`` is OpenAI's shape
    (``{"output_text": ..., "output_json": ...}``); ``item`` is the dataset row.
    """
    ctx = ctx or _DEFAULT_CONTEXT
    start = time.perf_counter()
    try:
        result = GRADE_FUNCTIONS[spec.type](spec, sample, item, ctx)
    except SampleError as exc:
        result = GradeResult.failure(exc.flag, exc.detail, exc.token_usage)
    except Exception as exc:
        # A bug in a grader must cost one sample, not the training step; it is logged
        # with its traceback and flagged so it is counted.
        logger.exception("grader %r (%s) crashed", getattr(spec, "name", "?"), spec.type)
        result = GradeResult.failure("other_error", f"{type(exc).__name__}: {exc}")
    return _finish(result, start)


# Types whose grading waits on I/O (HTTP): threads overlap the waits.
_WAITING_TYPES = frozenset({"score_model", "label_model", "endpoint"})


def _thread_map(fn: Callable[[Any], Any], seq: list[Any], workers: int) -> list[Any]:
    if workers <= 1 or len(seq) <= 1:
        return [fn(x) for x in seq]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grader") as pool:
        return list(pool.map(fn, seq))


def grade_batch(
    spec: Any,
    samples: Sequence[dict[str, Any]],
    items: Sequence[dict[str, Any]],
    ctx: GraderContext | None = None,
) -> list[GradeResult]:
    """Grade ``samples[i]`` against ``items[i]`` for every i; results keep the order.

    Graders that wait (judges, endpoints, sandboxed code) run concurrently up to the
    context's limits; pure in-process graders run in a plain loop because threads would
    only add overhead under the GIL.
    """
    if len(samples) != len(items):
        raise ValueError(f"grade_batch: {len(samples)} samples but {len(items)} items")
    ctx = ctx or _DEFAULT_CONTEXT
    samples, items = list(samples), list(items)
    if not samples:
        return []
    if spec.type == "multi":
        per_key = {key: grade_batch(sub, samples, items, ctx) for key, sub in spec.graders.items()}
        out = []
        for i in range(len(samples)):
            start = time.perf_counter()
            res = multi.combine(spec, {key: results[i] for key, results in per_key.items()})
            res = _finish(res, start)
            res.execution_time += sum(results[i].execution_time for results in per_key.values())
            out.append(res)
        return out
    if spec.type in BATCH_FUNCTIONS:
        start = time.perf_counter()
        raw = BATCH_FUNCTIONS[spec.type](spec, samples, items, ctx, _thread_map)
        # Wall time of the batch spread over its samples: they ran interleaved.
        share = (time.perf_counter() - start) / len(samples)
        results = []
        for entry in raw:
            res = GradeResult.failure(entry.flag, entry.detail) if isinstance(entry, SampleError) else entry
            res = _finish(res, time.perf_counter())
            res.execution_time = share
            results.append(res)
        return results
    if spec.type in _WAITING_TYPES:
        workers = min(ctx.batch_concurrency, len(samples))
        return _thread_map(lambda pair: grade(spec, pair[0], pair[1], ctx), list(zip(samples, items, strict=True)), workers)
    return [grade(spec, s, i, ctx) for s, i in zip(samples, items, strict=True)]
