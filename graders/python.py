"""``python``: the user's ``grade(sample, item) -> float``, run in the sandbox.

Example: ``{"type": "python", "name": "len_ok", "source": "def grade(sample, item):\\n
    return 1.0 if len(sample['output_text']) < 200 else 0.0"}``

The function must return a real number; anything else (an exception, a string such as
``"1.0"``, NaN, infinity, a timeout) scores 0 with ``python_grader_runtime_error``.
Finite values are clamped to ``range`` (default ``[0, 1]``). See ``graders.sandbox`` for
the isolation and the packages available to the code.
"""

from __future__ import annotations

import ast
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graders import sandbox
from graders.base import GraderContext, GradeResult, SampleError, finite_in_range

MAX_SOURCE_BYTES = 256 * 1024


class PythonGrader(BaseModel):
    """Spec of a ``python`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["python"]
    name: str
    source: str
    image_tag: str | None = Field(default=None, description="accepted for OpenAI compatibility; one image exists")
    range: tuple[float, float] = (0.0, 1.0)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if len(value.encode()) > MAX_SOURCE_BYTES:
            raise ValueError(f"source is larger than {MAX_SOURCE_BYTES // 1024} kB")
        try:
            tree = ast.parse(value)
        except SyntaxError as exc:
            raise ValueError(f"source has a syntax error at line {exc.lineno}: {exc.msg}") from None
        if not any(isinstance(node, ast.FunctionDef) and node.name == "grade" for node in tree.body):
            raise ValueError("source must define a top-level function grade(sample, item)")
        return value

    @model_validator(mode="after")
    def _range(self) -> PythonGrader:
        if not self.range[0] < self.range[1]:
            raise ValueError("range: must be [low, high] with low < high")
        return self

    def template_fields(self) -> list[tuple[str, str]]:
        """No templates: the code reads ``sample`` and ``item`` itself."""
        return []


def to_result(spec: PythonGrader, reply: dict[str, Any]) -> GradeResult:
    """Turn the sandbox's reply into a result (never trusting its value)."""
    if not reply.get("ok"):
        raise SampleError("python_grader_runtime_error", f"{reply.get('kind', 'error')}: {reply.get('detail', '')}")
    value = finite_in_range(reply.get("value"), spec.range[0], spec.range[1], "grade")
    return GradeResult(reward=value)


def grade(spec: PythonGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Run ``grade(sample, item)`` once in a fresh sandbox (``grade_batch`` keeps one warm)."""
    reply = sandbox.run_isolated(ctx, "python", spec.source, {"sample": sample, "item": item})
    return to_result(spec, reply)


def grade_many(
    spec: PythonGrader, samples: list[dict[str, Any]], items: list[dict[str, Any]], ctx: GraderContext, map_fn: Any
) -> list[GradeResult | SampleError]:
    """Grade many samples on a pool of warm sandboxes; ``map_fn(fn, seq, workers)`` runs
    them concurrently. Each entry is a result or the ``SampleError`` for that sample."""
    size = min(ctx.sandbox_workers, len(samples))
    try:
        pool = sandbox.SandboxPool(ctx, "python", spec.source, size)
    except SampleError as exc:
        return [exc] * len(samples)
    with pool:

        def one(pair: tuple[dict[str, Any], dict[str, Any]]) -> GradeResult | SampleError:
            try:
                return to_result(spec, pool.run({"sample": pair[0], "item": pair[1]}))
            except SampleError as exc:
                return exc

        return map_fn(one, list(zip(samples, items, strict=True)), size)
