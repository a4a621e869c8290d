"""``code_exec``: run code extracted from the completion against the item's tests.

Example::

    {"type": "code_exec", "name": "tests", "input": "{{sample.output_text}}",
     "tests": "{{item.tests}}", "timeout_s": 5}

The code is the last fenced block of the rendered ``input`` (```` ```python ```` preferred,
any fence otherwise, the whole text when there is none). ``tests`` resolves to a list
of cases, each either ``{"input": "<stdin>", "output": "<expected stdout>"}`` (output
compared after stripping trailing whitespace on each line and trailing blank lines) or
``{"assert": "<python run after the code, in its namespace>"}``; a bare string is an
assert case. Every case runs in a fresh forked process of the sandbox (see
``graders.sandbox``) with ``timeout_s`` of wall time. Score = fraction of cases passed;
the first failures are in ``error_detail`` (informational, not an error flag).
Only Python solutions are supported.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graders import sandbox, templates
from graders.base import GraderContext, GradeResult, SampleError

_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
MAX_CASES = 200


class CodeExecGrader(BaseModel):
    """Spec of a ``code_exec`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["code_exec"]
    name: str
    input: str = "{{sample.output_text}}"
    tests: str | list[Any] = "{{item.tests}}"
    language: Literal["python"] = "python"
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="wall time per test case")

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        out = [("input", self.input)]
        if isinstance(self.tests, str):
            out.append(("tests", self.tests))
        return out


def extract_code(text: str) -> str:
    """The last ```python fenced block, else the last fenced block, else ``text``."""
    blocks = _FENCE.findall(text)
    python_blocks = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return text


def _cases(spec: CodeExecGrader, sample: dict[str, Any], item: dict[str, Any]) -> list[dict[str, str]]:
    raw = templates.resolve(spec.tests, sample, item) if isinstance(spec.tests, str) else spec.tests
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SampleError("other_error", "code_exec tests are not a JSON list") from None
    if not isinstance(raw, list) or not raw:
        raise SampleError("other_error", "code_exec tests must be a non-empty list of cases")
    if len(raw) > MAX_CASES:
        raise SampleError("other_error", f"code_exec has more than {MAX_CASES} test cases")
    cases = []
    for index, case in enumerate(raw):
        if isinstance(case, str):
            cases.append({"assert": case})
        elif isinstance(case, dict) and isinstance(case.get("assert"), str):
            cases.append({"assert": case["assert"]})
        elif isinstance(case, dict) and "input" in case and "output" in case:
            cases.append({"input": templates.to_text(case["input"]), "output": templates.to_text(case["output"])})
        else:
            raise SampleError(
                "other_error", f"test case {index} must be {{'input','output'}}, {{'assert'}} or a string"
            )
    return cases


def request(spec: CodeExecGrader, sample: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """The sandbox request for one sample."""
    code = extract_code(templates.render(spec.input, sample, item))
    return {"code": code, "cases": _cases(spec, sample, item), "timeout_s": spec.timeout_s}


def _outer_timeout(req: dict[str, Any]) -> float:
    # The runner times each case; this outer limit only catches a wedged sandbox.
    return req["timeout_s"] * len(req["cases"]) + 10.0


def to_result(reply: dict[str, Any]) -> GradeResult:
    """Fraction passed, from the sandbox's reply."""
    if not reply.get("ok"):
        raise SampleError("python_grader_runtime_error", f"{reply.get('kind', 'error')}: {reply.get('detail', '')}")
    passed, total = reply.get("passed"), reply.get("total")
    if not isinstance(passed, int) or not isinstance(total, int) or total <= 0 or not 0 <= passed <= total:
        raise SampleError("python_grader_server_error", "the sandbox answered an invalid test count")
    failures = reply.get("failures") or []
    detail = "; ".join(str(f) for f in failures)[:500] or None
    return GradeResult(reward=passed / total, error_detail=detail)


def grade(spec: CodeExecGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Run the extracted code against the cases in a fresh sandbox."""
    req = request(spec, sample, item)
    return to_result(sandbox.run_isolated(ctx, "code", None, req, _outer_timeout(req)))


def grade_many(
    spec: CodeExecGrader, samples: list[dict[str, Any]], items: list[dict[str, Any]], ctx: GraderContext, map_fn: Any
) -> list[GradeResult | SampleError]:
    """Grade many samples on a pool of warm sandboxes (see ``python.grade_many``)."""
    size = min(ctx.sandbox_workers, len(samples))
    try:
        pool = sandbox.SandboxPool(ctx, "code", None, size)
    except SampleError as exc:
        return [exc] * len(samples)
    with pool:

        def one(pair: tuple[dict[str, Any], dict[str, Any]]) -> GradeResult | SampleError:
            try:
                req = request(spec, pair[0], pair[1])
                return to_result(pool.run(req, _outer_timeout(req)))
            except SampleError as exc:
                return exc

        return map_fn(one, list(zip(samples, items, strict=True)), size)
