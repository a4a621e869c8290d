import logging
import threading

import pytest

from graders import grade, grade_batch, parse_grader
from tests.graders.conftest import sample_of

SPEC = {"type": "math_match", "name": "answer"}

CASES = [
    # id, output, reference, expected reward
    ("boxed-frac-vs-decimal", r"The answer is \boxed{\frac{1}{2}}", "0.5", 1.0),
    ("plain-slash-vs-latex", "so x = 1/2", r"\frac{1}{2}", 1.0),
    ("last-number", "I get 42.", "42", 1.0),
    ("last-number-wins", "first 3, then finally 5", "5", 1.0),
    ("boxed-wrong", r"\boxed{41}", "42", 0.0),
    ("symbolic-expansion", "$x^2+2x+1$", "(x+1)^2", 1.0),
    ("sqrt-numeric", r"\boxed{\sqrt{2}}", "1.41421356", 1.0),
    ("set-answer", r"\boxed{1,2,3}", "{1,2,3}", 1.0),
    ("percent", r"\boxed{10\%}", "0.1", 1.0),
    ("negative", r"\boxed{-3}", "-3", 1.0),
    ("negative-sign-matters", r"\boxed{3}", "-3", 0.0),
    ("unicode-prose", r"答案是 \boxed{7}", "7", 1.0),
    ("huge-prefix", "x" * 200_000 + r" \boxed{9}", "9", 1.0),
    ("rounding-default-6", "0.3333333", "1/3", 1.0),
    ("rounding-too-coarse", "0.33", "1/3", 0.0),
]


@pytest.mark.parametrize(
    ("output", "ref", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_math_match(output, ref, expected, ctx):
    res = grade(parse_grader(SPEC), sample_of(output), {"answer": ref}, ctx)
    assert res.reward == expected
    assert not res.failed, res.error_detail


@pytest.mark.parametrize(
    "output", ["", "no answer here", "   "], ids=["empty", "words-only", "blank"]
)
def test_no_answer_scores_zero_without_an_error(output, ctx):
    res = grade(parse_grader(SPEC), sample_of(output), {"answer": "42"}, ctx)
    assert res.reward == 0.0
    assert not res.failed
    assert res.error_detail == "no final answer found in the output"


@pytest.mark.parametrize(
    "ref", ["", "not parsable ]][[", "$$"], ids=["empty", "garbage", "empty-math"]
)
def test_unparsable_reference_is_other_error(ref, ctx):
    # Before the fix a garbage reference scored every sample 0 with no flag at all.
    res = grade(parse_grader(SPEC), sample_of(r"\boxed{2}"), {"answer": ref}, ctx)
    assert res.reward == 0.0
    assert res.errors["other_error"]
    assert "reference" in res.error_detail


def test_custom_templates_and_rounding(ctx):
    spec = parse_grader(
        {
            **SPEC,
            "input": "{{sample.output_json.final}}",
            "reference": "{{item.gold}}",
            "float_rounding": 2,
        }
    )
    res = grade(spec, sample_of('{"final": "3.14159"}'), {"gold": "3.14"}, ctx)
    assert res.reward == 1.0
    with pytest.raises(Exception) as info:
        parse_grader({**SPEC, "float_rounding": 99})
    assert info.value.param == "float_rounding"


def test_missing_answer_key_is_invalid_variable(ctx):
    res = grade(parse_grader(SPEC), sample_of("42"), {"solution": "42"}, ctx)
    assert res.errors["invalid_variable_error"]


def test_off_main_thread_without_log_spam(ctx, caplog):
    spec = parse_grader(SPEC)
    out = []
    with caplog.at_level(logging.WARNING):
        worker = threading.Thread(
            target=lambda: out.append(
                grade(spec, sample_of(r"\boxed{\frac{2}{4}}"), {"answer": "0.5"}, ctx)
            )
        )
        worker.start()
        worker.join(30)
    assert out[0].reward == 1.0
    assert not [r for r in caplog.records if "Timeout is disabled" in r.getMessage()]


def test_batch_keeps_order(ctx):
    outputs = [rf"\boxed{{{n}}}" for n in range(20)]
    results = grade_batch(
        parse_grader(SPEC),
        [sample_of(o) for o in outputs],
        [{"answer": str(n % 2)} for n in range(20)],
        ctx,
    )
    assert [r.reward for r in results] == [1.0 if n in (0, 1) else 0.0 for n in range(20)]
