import pytest

from graders import grade, parse_grader
from tests.graders.conftest import sample_of

CASES = [
    # id, operation, output, reference, expected
    ("eq-match", "eq", "Paris", "Paris", 1.0),
    ("eq-case", "eq", "paris", "Paris", 0.0),
    ("eq-empty-both", "eq", "", "", 1.0),
    ("eq-empty-output", "eq", "", "Paris", 0.0),
    ("ne-differs", "ne", "Lyon", "Paris", 1.0),
    ("ne-same", "ne", "Paris", "Paris", 0.0),
    ("like-contains", "like", "The answer is Paris.", "Paris", 1.0),
    ("like-case", "like", "the answer is paris", "Paris", 0.0),
    ("ilike-case", "ilike", "THE ANSWER IS PARIS", "paris", 1.0),
    ("ilike-unicode-casefold", "ilike", "STRASSE", "straße", 1.0),
    ("eq-unicode", "eq", "日本語 ✓", "日本語 ✓", 1.0),
    ("like-huge", "like", "x" * 1_000_000 + "needle", "needle", 1.0),
]


@pytest.mark.parametrize(("op", "output", "ref", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_string_check(op, output, ref, expected, ctx):
    spec = parse_grader(
        {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": op}
    )
    res = grade(spec, sample_of(output), {"answer": ref}, ctx)
    assert res.reward == expected
    assert not res.failed


def test_missing_item_key_is_invalid_variable(ctx):
    spec = parse_grader(
        {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.nope}}", "operation": "eq"}
    )
    res = grade(spec, sample_of("a"), {"answer": "a"}, ctx)
    assert res.reward == 0.0
    assert res.errors["invalid_variable_error"]
    assert "nope" in res.error_detail


def test_nested_paths_and_literal_text(ctx):
    spec = parse_grader(
        {
            "type": "string_check",
            "name": "s",
            "input": "answer: {{sample.output_json.a[1].b}}",
            "reference": "answer: {{item.ref['x.y']}}",
            "operation": "eq",
        }
    )
    res = grade(spec, sample_of('{"a": [0, {"b": "ok"}]}'), {"ref": {"x.y": "ok"}}, ctx)
    assert res.reward == 1.0


def test_key_missing_from_the_output_json_blames_the_sample(ctx):
    # The model wrote JSON of the wrong shape: a sample-side flag, so a job's
    # failing-grader check does not mistake an untrained policy for a broken grader.
    spec = parse_grader(
        {"type": "string_check", "name": "s", "input": "{{sample.output_json.answer}}", "reference": "a", "operation": "eq"}
    )
    res = grade(spec, sample_of('{"other": 1}'), {}, ctx)
    assert res.reward == 0.0
    assert res.errors["sample_parse_error"] and not res.errors["invalid_variable_error"]
    assert "answer" in res.error_detail
