import json

import pytest

from graders import grade, parse_grader
from tests.graders.conftest import sample_of

REFERENCE = {
    "university": "University of California Berkeley",
    "programming_languages": ["python", "c++", "java"],
    "city": "Los Angeles",
    "state": "California",
}

SPEC = {
    "type": "json_match",
    "name": "resume",
    "reference": "{{item.reference}}",
    "fields": {
        "university": {"mode": "fuzzy", "threshold": 0.9, "weight": 2},
        "programming_languages": {"mode": "set"},
    },
}


def answer(**changes):
    out = dict(REFERENCE)
    for key, value in changes.items():
        if value is ...:
            out.pop(key)
        else:
            out[key] = value
    return out


# Weights: university 2, the other three 1 -> total 5.
CASES = [
    # id, spec overrides, output text, expected reward, expected sub-rewards (subset) or error flag
    ("perfect", {}, json.dumps(REFERENCE), 1.0, {"university": 1.0}),
    ("normalized-case-space", {}, json.dumps(answer(city="  los   ANGELES ")), 1.0, {"city": 1.0}),
    ("fuzzy-below-threshold", {}, json.dumps(answer(university="UC Berkeley")), 3 / 5, {"university": 0.0}),
    ("set-partial", {}, json.dumps(answer(programming_languages=["Python", "java"])), (2 + 0.8 + 1 + 1) / 5, {"programming_languages": 0.8}),
    ("set-empty-output", {}, json.dumps(answer(programming_languages=[])), 4 / 5, {"programming_languages": 0.0}),
    ("missing-field", {}, json.dumps(answer(state=...)), 4 / 5, {"state": 0.0}),
    ("missing-score-half", {"missing_score": 0.5}, json.dumps(answer(state=...)), 4.5 / 5, {"state": 0.5}),
    ("extra-ignored", {}, json.dumps(answer(zip="94720")), 1.0, {}),
    ("extra-penalized", {"extra_fields": "penalize"}, json.dumps(answer(zip="94720")), 5 / 6, {}),
    ("not-json", {}, "I think it's Berkeley", 0.0, "sample_parse_error"),
    ("empty-output", {}, "", 0.0, "sample_parse_error"),
    ("json-array", {}, "[1, 2]", 0.0, "sample_parse_error"),
    ("unicode", {}, json.dumps(answer(city="Los Ángeles")), 4 / 5, {"city": 0.0}),
    ("wrong-type-list-for-set", {}, json.dumps(answer(programming_languages="python")), 4 / 5, {"programming_languages": 0.0}),
    ("huge-output", {}, json.dumps(answer(blob="x" * 2_000_000)), 1.0, {}),
]


@pytest.mark.parametrize(("overrides", "output", "expected", "check"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_json_match(overrides, output, expected, check, ctx):
    spec = parse_grader({**SPEC, **overrides})
    res = grade(spec, sample_of(output), {"reference": REFERENCE}, ctx)
    assert res.reward == pytest.approx(expected)
    if isinstance(check, str):
        assert res.errors[check]
        assert res.error_detail
    else:
        assert not res.failed
        for key, value in check.items():
            assert res.sub_rewards[key] == pytest.approx(value)


FIELD_MODES = [
    ("exact-int-float", {"mode": "numeric"}, 3, 3.0, 1.0),
    ("abs-tol-in", {"mode": "numeric", "abs_tol": 0.1}, 3.05, 3, 1.0),
    ("abs-tol-out", {"mode": "numeric", "abs_tol": 0.01}, 3.05, 3, 0.0),
    ("rel-tol", {"mode": "numeric", "rel_tol": 0.01}, 1005, 1000, 1.0),
    ("numeric-string", {"mode": "numeric"}, "1,234.5", 1234.5, 1.0),
    ("numeric-garbage", {"mode": "numeric"}, "many", 3, 0.0),
    ("numeric-bool-is-not-number", {"mode": "numeric"}, True, 1, 0.0),
    ("exact-bool-vs-int", {"mode": "exact"}, True, 1, 0.0),
    ("exact-nested-object", {"mode": "exact"}, {"b": [1, 2], "a": None}, {"a": None, "b": [1.0, 2]}, 1.0),
    ("exact-case", {"mode": "exact"}, "Paris", "paris", 0.0),
    ("normalized-nested", {"mode": "normalized"}, {"x": ["  A b"]}, {"x": ["a B"]}, 1.0),
    ("fuzzy-raw", {"mode": "fuzzy"}, "kitten", "sitting", 0.6153846153846154),
    ("set-precision", {"mode": "set", "set_metric": "precision"}, ["a", "b", "c", "d"], ["a", "b"], 0.5),
    ("set-recall", {"mode": "set", "set_metric": "recall"}, ["a"], ["a", "b"], 0.5),
    ("set-both-empty", {"mode": "set"}, [], [], 1.0),
    ("set-duplicates", {"mode": "set"}, ["a", "a", "A"], ["a"], 1.0),
]


@pytest.mark.parametrize(("field", "got", "want", "expected"), [c[1:] for c in FIELD_MODES], ids=[c[0] for c in FIELD_MODES])
def test_field_modes(field, got, want, expected, ctx):
    spec = parse_grader({"type": "json_match", "name": "j", "reference": {"v": want}, "fields": {"v": field}})
    res = grade(spec, sample_of("", {"v": got}), {}, ctx)
    assert res.reward == pytest.approx(expected)


def test_reference_as_json_string_and_input_template(ctx):
    spec = parse_grader(
        {"type": "json_match", "name": "j", "reference": "{{item.ref}}", "input": "{{sample.output_json.profile}}"}
    )
    res = grade(spec, sample_of('{"profile": {"a": 1}}'), {"ref": '{"a": 1}'}, ctx)
    assert res.reward == 1.0


def test_weights_and_zero_weight(ctx):
    spec = parse_grader(
        {"type": "json_match", "name": "j", "reference": {"a": 1, "b": 2}, "fields": {"a": {"weight": 3}, "b": {"weight": 0}}}
    )
    res = grade(spec, sample_of("", {"a": 1, "b": 5}), {}, ctx)
    assert res.reward == 1.0
    assert res.sub_rewards == {"a": 1.0, "b": 0.0}


def test_reference_not_an_object_is_an_error(ctx):
    spec = parse_grader({"type": "json_match", "name": "j", "reference": "{{item.ref}}"})
    res = grade(spec, sample_of('{"a": 1}'), {"ref": [1]}, ctx)
    assert res.errors["other_error"]
    assert res.reward == 0.0
