"""Assert cases split into solution expressions and a host check (no sandbox needed)."""

import pytest

from graders import GraderError, parse_grader
from graders.code_checks import CheckFailed, UnsupportedAssert, compile_assert


def tag(value):
    """The tagged form the sandbox's harness sends back (mirrors inside.encode)."""
    if value is None:
        return ["n"]
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, list):
        return ["l", [tag(v) for v in value]]
    if isinstance(value, tuple):
        return ["t", [tag(v) for v in value]]
    if isinstance(value, dict):
        return ["d", [[tag(k), tag(v)] for k, v in value.items()]]
    raise TypeError(value)


@pytest.mark.parametrize(("source", "exprs", "value", "passes"), [
    ("assert add(1, 2) == 3", ("add(1, 2)",), 3, True),
    ("assert add(1, 2) == 3", ("add(1, 2)",), 4, False),
    ("assert add(1, 2) == 3, 'sums'", ("add(1, 2)",), 3, True),
    ("assert 3 == add(1, 2)", ("add(1, 2)",), 3, True),
    ("assert is_prime(7)", ("is_prime(7)",), True, True),
    ("assert not is_prime(8)", ("is_prime(8)",), False, True),
    ("assert f(1) is None", ("f(1)",), None, True),
    ("assert f(1) is None", ("f(1)",), 0, False),
    ("assert abs(area(1.0) - 3.14159) < 1e-4", ("area(1.0)",), 3.14159, True),
    ("assert abs(area(1.0) - 3.14159) < 1e-4", ("area(1.0)",), 3.2, False),
    ("assert math.isclose(root(2), 1.41421, rel_tol=1e-4)", ("root(2)",), 2 ** 0.5, True),
    ("assert sorted(uniq([3, 1, 3])) == [1, 3]", ("uniq([3, 1, 3])",), [3, 1], True),
    ("assert len(f('abc')) == 3", ("f('abc')",), "xyz", True),
    ("assert f(2) == (1, 2)", ("f(2)",), [1, 2], False),  # a list is not a tuple, as in Python
    ("assert f(2) == {'a': [1]}", ("f(2)",), {"a": [1]}, True),
    ("assert f(2)[0] == 'x'", ("f(2)",), ["x", "y"], True),
    ("assert 0 < f(2) <= 10", ("f(2)",), 10, True),
    ("assert Solution().two([2, 7], 9) == [0, 1]", ("Solution().two([2, 7], 9)",), [0, 1], True),
])
def test_split_and_check(source, exprs, value, passes):
    check = compile_assert(source)
    assert check.exprs == exprs
    assert check.passes([tag(value)]) is passes


def test_two_solution_values_are_not_compared_with_each_other():
    # Both sides would come from the solution's process, which can make them agree.
    with pytest.raises(UnsupportedAssert, match="both sides"):
        compile_assert("assert f(2) == f(1) + 1")
    check = compile_assert("assert f(2) == 5 and f(1) == 4")
    assert check.exprs == ("f(2)", "f(1)")
    assert check.passes([tag(5), tag(4)]) and not check.passes([tag(5), tag(5)])


@pytest.mark.parametrize("source", [
    "assert True",                                    # never calls the solution
    "x = f(2)\nassert x == 4",                        # several statements
    "assert all(f(i) == i * i for i in range(3))",    # the expected values would be in the solution's frame
    "assert f(lambda: 4) == 4",
    "assert f(2) is 4",
    "print(f(2))",
    "assert f(2 ==",
])
def test_unsafe_or_malformed_asserts_are_refused(source):
    with pytest.raises(UnsupportedAssert):
        compile_assert(source)


def test_grader_with_an_unsafe_literal_case_is_a_validation_error_naming_tests():
    with pytest.raises(GraderError) as exc:
        parse_grader({"type": "code_exec", "name": "c", "tests": ["assert f(1) == 1", "assert True"]})
    assert exc.value.param == "tests"
    assert "test case 1" in exc.value.message


@pytest.mark.parametrize("bad", [
    ["x"], ["i", "12x"], ["l", "notalist"], ["d", [[["l", []], ["n"]]]], ["f"], ["i", "9" * 5000],
])
def test_malformed_values_fail_the_case_not_the_grader(bad):
    with pytest.raises(CheckFailed):
        compile_assert("assert f() == 1").passes([bad])


def test_host_check_cannot_be_made_to_compute_forever():
    with pytest.raises(CheckFailed):
        compile_assert("assert f() ** 99999999 == 1").passes([tag(10)])
    with pytest.raises(CheckFailed):
        compile_assert("assert f() * 10**9 == 'x'").passes([tag("ab")])
    with pytest.raises(CheckFailed):
        compile_assert("assert f() == 1").passes([tag(1), tag(2)])  # wrong number of values
