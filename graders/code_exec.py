"""``code_exec``: run code extracted from the completion against the item's tests.

Example::

    {"type": "code_exec", "name": "tests", "input": "{{sample.output_text}}",
     "tests": "{{item.tests}}", "timeout_s": 5}

The code is the last fenced block of the rendered ``input`` (```` ```python ```` preferred,
any fence otherwise, the whole text when there is none). ``tests`` resolves to a list
of cases, each either ``{"input": "<stdin>", "output": "<expected stdout>"}`` or
``{"assert": "assert f(2) == 4"}``; a bare string is an assert case. Score = fraction
of cases passed; the first failures are in ``error_detail`` (informational, not an
error flag). Only Python solutions are supported.

The verdict is out of the solution's reach: every case runs in a fresh jailed process
of the sandbox (see ``graders.sandbox``) that is only told the case's input (its stdin,
or the solution expressions of an assert, see ``graders.code_checks``) and reports
what the solution printed or returned; the expected output and the comparison stay in
this process. Output is compared after stripping trailing whitespace on each line and
trailing blank lines. A case whose process ends early, crashes or times out fails,
whatever its exit status; for an assert the solution's values must come back as plain
builtin values and satisfy the check.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from graders import code_checks, sandbox, templates
from graders.base import GraderContext, GradeResult, SampleError

_LANG = re.compile(r"[A-Za-z0-9_+-]*")
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

    @field_validator("tests")
    @classmethod
    def _literal_tests(cls, value: str | list[Any]) -> str | list[Any]:
        # Cases written into the grader are checked now; templated ones per sample.
        if isinstance(value, list):
            parse_cases(value)
        return value

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        out = [("input", self.input)]
        if isinstance(self.tests, str):
            out.append(("tests", self.tests))
        return out


def extract_code(text: str) -> str:
    """The last ```python fenced block, else the last fenced block, else ``text``."""
    blocks = _fenced_blocks(text)
    python_blocks = [code for lang, code in blocks if lang.lower() in ("python", "py", "python3")]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return text


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each ```` ```lang ... ``` ```` block, left to right. A scan, not a
    regex: the completion is the policy's, and a backtracking pattern over a long line of
    backticks takes quadratic time in the grading process."""
    blocks = []
    pos = 0
    while (start := text.find("```", pos)) >= 0:
        newline = text.find("\n", start + 3)
        end = text.find("```", newline + 1) if newline >= 0 else -1
        if end < 0:
            break
        blocks.append((_LANG.match(text, start + 3).group(), text[newline + 1 : end]))
        pos = end + 3
    return blocks


def _cases(spec: CodeExecGrader, sample: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    raw = templates.resolve(spec.tests, sample, item) if isinstance(spec.tests, str) else spec.tests
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SampleError("other_error", "code_exec tests are not a JSON list") from None
    try:
        return parse_cases(raw)
    except ValueError as exc:
        raise SampleError("other_error", str(exc)) from None


def parse_cases(raw: Any) -> list[dict[str, Any]]:
    """Test cases as ``{"input", "output"}`` or ``{"check": AssertCheck}``; raises
    ``ValueError`` naming the case that is malformed or cannot be checked safely."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("code_exec tests must be a non-empty list of cases")
    if len(raw) > MAX_CASES:
        raise ValueError(f"code_exec has more than {MAX_CASES} test cases")
    cases: list[dict[str, Any]] = []
    for index, case in enumerate(raw):
        if isinstance(case, dict) and isinstance(case.get("assert"), str):
            case = case["assert"]
        if isinstance(case, str):
            try:
                cases.append({"check": code_checks.compile_assert(case)})
            except code_checks.UnsupportedAssert as exc:
                raise ValueError(f"test case {index}: {exc}") from None
        elif isinstance(case, dict) and "input" in case and "output" in case:
            cases.append({"input": templates.to_text(case["input"]), "output": templates.to_text(case["output"])})
        else:
            raise ValueError(f"test case {index} must be {{'input','output'}}, {{'assert'}} or a string")
    return cases


def check_item(spec: CodeExecGrader, item: dict[str, Any]) -> None:
    """Check the cases a dataset row gives this grader (before any sample exists);
    raises ``ValueError`` saying which case cannot be checked safely. Cases whose
    template needs a sample are checked per sample instead."""
    if not isinstance(spec.tests, str):
        return
    try:
        _cases(spec, {}, item)
    except SampleError as exc:
        if exc.flag != "other_error":
            return  # reads the sample or a key the row lacks: per sample
        raise ValueError(exc.detail) from None


def request(spec: CodeExecGrader, sample: dict[str, Any], item: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """The sandbox request for one sample (inputs only) and the cases it is judged by."""
    code = extract_code(templates.render(spec.input, sample, item))
    cases = _cases(spec, sample, item)
    wire = [{"exprs": list(c["check"].exprs)} if "check" in c else {"stdin": c["input"]} for c in cases]
    return {"code": code, "cases": wire, "timeout_s": spec.timeout_s}, cases


def _outer_timeout(req: dict[str, Any]) -> float:
    # The sandbox times each case; this outer limit only catches a wedged sandbox.
    return req["timeout_s"] * len(req["cases"]) + 10.0


def _judge(case: dict[str, Any], got: Any) -> str | None:
    """None when the case passed, else why it failed."""
    if not isinstance(got, dict):
        return "no result"
    if not got.get("ok"):
        return f"{got.get('kind', 'error')}: {str(got.get('detail', ''))[:300]}"
    if "check" in case:
        try:
            return None if case["check"].passes(got.get("values")) else "assertion failed"
        except code_checks.CheckFailed as exc:
            return str(exc)
    stdout = got.get("stdout")
    if not isinstance(stdout, str):
        return "no output"
    return None if normalise_output(stdout) == normalise_output(case["output"]) else "wrong output"


def normalise_output(text: str) -> str:
    """Trailing whitespace of each line and trailing blank lines do not count."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def to_result(cases: list[dict[str, Any]], reply: dict[str, Any]) -> GradeResult:
    """Fraction passed: each case judged here from what the sandbox reported."""
    if not reply.get("ok"):
        raise SampleError("python_grader_runtime_error", f"{reply.get('kind', 'error')}: {reply.get('detail', '')}")
    got = reply.get("cases")
    if not isinstance(got, list) or len(got) != len(cases):
        raise SampleError("python_grader_server_error", "the sandbox answered an invalid number of cases")
    passed = 0
    failures = []
    for index, (case, result) in enumerate(zip(cases, got, strict=True)):
        why = _judge(case, result)
        if why is None:
            passed += 1
        elif len(failures) < 5:
            failures.append(f"case {index}: {why}")
    detail = "; ".join(failures)[:500] or None
    return GradeResult(reward=passed / len(cases), error_detail=detail)


def grade(spec: CodeExecGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Run the extracted code against the cases in a fresh sandbox."""
    req, cases = request(spec, sample, item)
    return to_result(cases, sandbox.run_isolated(ctx, "code", None, req, _outer_timeout(req)))


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
                req, cases = request(spec, pair[0], pair[1])
                return to_result(cases, pool.run(req, _outer_timeout(req)))
            except SampleError as exc:
                return exc

        return map_fn(one, list(zip(samples, items, strict=True)), size)
