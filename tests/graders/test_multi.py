import builtins
import math

import pytest

from graders import GraderError, formula, grade, grade_batch, parse_grader
from tests.graders.conftest import sample_of

ENV = {"a": 1.0, "b": 0.5, "c": 0.0}

EVALUATES = [
    # id, formula, expected
    ("precedence-mul-over-add", "2 + 3 * 4", 14.0),
    ("precedence-div-over-sub", "1 - 6 / 3", -1.0),
    ("left-assoc-sub", "10 - 3 - 2", 5.0),
    ("left-assoc-div", "8 / 4 / 2", 1.0),
    ("parentheses", "(2 + 3) * 4", 20.0),
    ("power-right-assoc", "2 ^ 3 ^ 2", 512.0),
    ("power-over-unary-minus", "-2 ^ 2", -4.0),
    ("power-negative-exponent", "2 ^ -1", 0.5),
    ("unary-chain", "--+-a", -1.0),
    ("variables", "0.3 * a + 0.7 * b", 0.65),
    ("min-many", "min(a, b, c)", 0.0),
    ("max-one-arg", "max(b)", 0.5),
    ("min-one-arg", "min(a)", 1.0),
    ("abs", "abs(c - a)", 1.0),
    ("floor", "floor(2.7)", 2.0),
    ("ceil", "ceil(2.1)", 3.0),
    ("exp", "exp(c)", 1.0),
    ("sqrt", "sqrt(16)", 4.0),
    ("log-natural", "log(exp(2))", 2.0),
    ("nested-calls", "max(min(a, b), sqrt(c))", 0.5),
    ("scientific", "1e-3 * 1000", 1.0),
    ("leading-dot", ".5 + .5", 1.0),
    ("whitespace", "  a\t*\nb  ", 0.5),
    ("deep-but-allowed", "(" * 40 + "a" + ")" * 40, 1.0),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in EVALUATES], ids=[c[0] for c in EVALUATES]
)
def test_formula_evaluates(text, expected):
    assert formula.evaluate(formula.parse(text, set(ENV)), ENV) == pytest.approx(expected)


PARSE_ERRORS = [
    # id, formula, part of the message
    ("empty", "", "empty"),
    ("unknown-variable", "a + d", "unknown variable"),
    ("unknown-function", "pow(a, 2)", "unknown function"),
    ("python-power", "a ** 2", "unexpected"),
    ("modulo", "a % 2", "unexpected character"),
    ("attribute", "a.real", "unexpected character"),
    ("dunder-call", "__import__('os')", "unexpected character"),
    ("string-literal", '"a"', "unexpected character"),
    ("unclosed", "(a + b", "expected ')'"),
    ("stray-close", "a)", "after a complete expression"),
    ("dangling-op", "a +", "unexpected end"),
    ("juxtaposition", "a b", "after a complete expression"),
    ("no-args", "max()", "unexpected"),
    ("arity", "abs(a, b)", "takes 1 argument"),
    ("too-deep-parens", "(" * 150 + "a" + ")" * 150, "nested deeper"),
    ("too-deep-unary", "-" * 500 + "a", "nested deeper"),
    ("too-long-sum", "+".join(["a"] * 200), "nested deeper"),
    ("too-long", "a" + " " * 2000, "longer than"),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS]
)
def test_formula_parse_errors(text, message):
    with pytest.raises(formula.FormulaError) as info:
        formula.parse(text, set(ENV))
    assert message in str(info.value)


MATH_ERRORS = ["a / c", "log(c)", "sqrt(c - a)", "(c - a) ^ 0.5", "exp(1000)", "10 ^ 400"]


@pytest.mark.parametrize("text", MATH_ERRORS)
def test_formula_math_errors_raise_arithmetic_or_value_errors(text):
    with pytest.raises((ArithmeticError, ValueError)):
        formula.evaluate(formula.parse(text, set(ENV)), ENV)


def test_formula_never_uses_eval(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec/compile must not be used")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    for _, text, expected in EVALUATES:
        assert formula.evaluate(formula.parse(text, set(ENV)), ENV) == pytest.approx(expected)


EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
CONTAINS = {**EXACT, "name": "contains", "operation": "ilike"}
FIELDS = {"type": "json_match", "name": "fields", "reference": "{{item.ref}}"}


def multi(formula_text: str, **graders) -> dict:
    return {
        "type": "multi",
        "name": "combo",
        "graders": graders or {"exact": EXACT, "contains": CONTAINS},
        "calculate_output": formula_text,
    }


GRADES = [
    # id, formula, output, answer, expected reward, expected sub_rewards
    (
        "weighted-both",
        "0.5 * exact + 0.5 * contains",
        "Paris",
        "Paris",
        1.0,
        {"exact": 1.0, "contains": 1.0},
    ),
    (
        "weighted-one",
        "0.25 * exact + 0.75 * contains",
        "it is PARIS",
        "paris",
        0.75,
        {"exact": 0.0, "contains": 1.0},
    ),
    ("min", "min(exact, contains)", "it is paris", "paris", 0.0, {"exact": 0.0, "contains": 1.0}),
    ("constant-only-uses-no-grader", "1", "x", "y", 1.0, {"exact": 0.0, "contains": 0.0}),
    ("unicode", "exact * contains", "日本語", "日本語", 1.0, {"exact": 1.0, "contains": 1.0}),
    ("empty-output", "max(exact, contains)", "", "paris", 0.0, {"exact": 0.0, "contains": 0.0}),
]


@pytest.mark.parametrize(
    ("text", "output", "answer", "reward", "subs"),
    [c[1:] for c in GRADES],
    ids=[c[0] for c in GRADES],
)
def test_multi_grade(text, output, answer, reward, subs, ctx):
    res = grade(parse_grader(multi(text)), sample_of(output), {"answer": answer}, ctx)
    assert res.reward == pytest.approx(reward)
    assert res.sub_rewards == subs
    assert not res.failed


@pytest.mark.parametrize(
    "text",
    ["exact / (exact - exact)", "log(exact - exact)", "sqrt(exact - 2)", "exp(1000 * exact)"],
)
def test_math_error_in_formula_is_formula_parse_error(text, ctx):
    res = grade(parse_grader(multi(text)), sample_of("Paris"), {"answer": "Paris"}, ctx)
    assert res.reward == 0.0
    assert res.errors["formula_parse_error"]
    assert "calculate_output" in res.error_detail
    assert res.sub_rewards == {"exact": 1.0, "contains": 1.0}


def test_sub_grader_failure_is_flagged_and_counts_zero(ctx):
    spec = parse_grader(multi("0.5 * exact + 0.5 * fields", exact=EXACT, fields=FIELDS))
    res = grade(spec, sample_of("not json"), {"answer": "not json", "ref": {"k": 1}}, ctx)
    assert res.reward == pytest.approx(0.5)
    assert res.sub_rewards == {"exact": 1.0, "fields": 0.0}
    assert res.errors["sample_parse_error"]
    assert res.error_detail.startswith("fields:")


def test_json_match_sub_rewards_are_per_grader_not_per_field(ctx):
    spec = parse_grader(multi("fields", fields=FIELDS))
    res = grade(spec, sample_of('{"k": 1, "m": 0}'), {"ref": {"k": 1, "m": 2}}, ctx)
    assert res.sub_rewards == {"fields": 0.5}


INVALID = [
    # id, grader, expected param
    ("unknown-name", multi("exact + nope"), "calculate_output"),
    ("unknown-function", multi("pow(exact, 2)"), "calculate_output"),
    ("division-sign-typo", multi("exact // 2"), "calculate_output"),
    ("nested-multi", multi("inner", inner=multi("exact")), "graders.inner.type"),
    ("bad-sub-field", multi("exact", exact={**EXACT, "operation": "~"}), "graders.exact.operation"),
    (
        "bad-sub-template",
        multi("exact", exact={**EXACT, "input": "{{answer}}"}),
        "graders.exact.input",
    ),
    ("bad-key", {**multi("x"), "graders": {"not valid": EXACT}}, "graders"),
    ("no-graders", {**multi("1"), "graders": {}}, "graders"),
]


@pytest.mark.parametrize(("spec", "param"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_multi(spec, param):
    with pytest.raises(GraderError) as info:
        parse_grader(spec)
    assert info.value.param == param
    if param == "calculate_output":
        assert "formula_parse_error" in info.value.message


def test_unknown_item_key_found_at_validation():
    from graders import validate_grader

    spec = parse_grader(multi("exact", exact={**EXACT, "reference": "{{item.gold}}"}))
    with pytest.raises(GraderError) as info:
        validate_grader(spec, item_keys={"answer"})
    assert info.value.param == "graders.exact.reference"
    assert "invalid_variable_error" in info.value.message


def test_batch_matches_one_by_one(ctx):
    spec = parse_grader(multi("0.5 * exact + 0.5 * contains + 0 * exact / (contains - contains)"))
    outputs = ["Paris", "paris", "x", ""]
    samples = [sample_of(o) for o in outputs]
    items = [{"answer": "Paris"}] * len(outputs)
    batch = grade_batch(spec, samples, items, ctx)
    single = [grade(spec, s, i, ctx) for s, i in zip(samples, items, strict=True)]
    assert [r.reward for r in batch] == [r.reward for r in single]
    assert all(r.errors["formula_parse_error"] for r in batch)
    assert all(math.isfinite(r.execution_time) for r in batch)
