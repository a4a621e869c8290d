"""Assert-style test cases of ``code_exec``, split so the expected values never reach the
solution.

``assert f(2) == 4`` run inside the solution's process lets the solution win without
solving anything: it can read ``4`` out of the harness's memory or frames, or return an
object whose ``__eq__`` always answers True. So an assert case is compiled into:

- *solution expressions*: the maximal sub-expressions that call or name the solution's
  code (``f(2)``), sent to the sandbox, evaluated there and sent back as tagged plain
  values (``inside.encode``: exact builtin types only, no user objects);
- a *host check*: the rest of the assert (``__leaf0 == 4``), evaluated here by a small
  interpreter over plain values (comparisons, arithmetic, a few pure builtins such as
  ``len``, ``sorted``, ``abs``, ``round`` and ``math.isclose``). It runs no user code.

Forms that cannot be split this way (comprehensions, lambdas, several statements, an
assert that never calls the solution) are refused with ``UnsupportedAssert``, whose
message says which form to write instead. So are expected values the solution would
compute itself: a sub-expression that names only builtins, standard-library modules or
constants (``list(range(5))``, ``math.factorial(5)``, ``"a b".split()``), which the
solution could redefine to agree with its own answer, and a comparison whose two sides
both come from the sandbox (``f(5) == g(5)``, ``f(x) == Counter([1, 2])``).
"""

from __future__ import annotations

import ast
import builtins
import math
import sys
from dataclasses import dataclass
from typing import Any

_HINT = (
    "write one `assert <call of the solution> <op> <expected value>` per case, e.g. "
    "`assert add(2, 3) == 5` or `assert abs(area(1.0) - 3.14159) < 1e-4`, or use an "
    "{input, output} case"
)
_HOST_FUNCS: dict[str, Any] = {
    "abs": abs, "round": round, "len": len, "sorted": sorted, "set": set, "frozenset": frozenset,
    "tuple": tuple, "list": list, "dict": dict, "min": min, "max": max, "sum": sum, "any": any,
    "all": all, "int": int, "float": float, "str": str, "bool": bool, "isinstance": isinstance,
}  # fmt: skip
_HOST_TYPES: dict[str, type] = {
    "int": int, "float": float, "str": str, "bool": bool, "list": list, "tuple": tuple, "dict": dict,
    "set": set, "frozenset": frozenset, "complex": complex, "bytes": bytes,
}  # fmt: skip
_MATH: dict[str, Any] = {
    "isclose": math.isclose, "isnan": math.isnan, "isinf": math.isinf, "isfinite": math.isfinite,
    "sqrt": math.sqrt, "floor": math.floor, "ceil": math.ceil, "fabs": math.fabs,
    "pi": math.pi, "e": math.e, "inf": math.inf,
}  # fmt: skip
_FORBIDDEN_IN_LEAF = (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.NamedExpr,
                      ast.Await, ast.Yield, ast.YieldFrom)  # fmt: skip
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
# Bounds on what the host check may compute (it must never be a DoS lever). A value's
# size counts nested elements and characters, shared ones as often as they appear
# (``[[0] * 1000] * 1000`` is a million): that is what comparing or copying it costs.
_MAX_SEQ = 1_000_000
_MAX_ROUND_DIGITS = 1000
# Names that are not the solution's own (a leaf naming only these is an expected value).
_BUILTIN_NAMES = frozenset(dir(builtins))
_MAX_INT_BITS = 4096
_MAX_DEPTH = 64


class UnsupportedAssert(ValueError):
    """An assert case rft cannot check without letting the solution see the answer."""


class CheckFailed(Exception):
    """The host check could not be evaluated on the solution's values."""


@dataclass(frozen=True)
class AssertCheck:
    """One compiled assert case: ``exprs`` go to the sandbox, ``check`` stays here."""

    source: str
    exprs: tuple[str, ...]
    check: ast.expr

    def passes(self, tagged_values: list[Any]) -> bool:
        """True when the assert holds for the solution's values (raises ``CheckFailed``)."""
        if not isinstance(tagged_values, list) or len(tagged_values) != len(self.exprs):
            raise CheckFailed("the solution's harness answered the wrong number of values")
        leaves = [decode(v) for v in tagged_values]
        return bool(_eval(self.check, leaves))


def compile_assert(text: str) -> AssertCheck:
    """Split one ``assert`` statement; raises ``UnsupportedAssert`` naming what to change."""
    try:
        tree = ast.parse(text.strip(), mode="exec")
    except SyntaxError as exc:
        raise UnsupportedAssert(f"assert case is not valid Python ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise UnsupportedAssert("assert case is not valid Python") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise UnsupportedAssert(f"an assert case must be a single assert statement; {_HINT}")
    exprs: list[str] = []
    check = _split(tree.body[0].test, exprs)
    if not exprs:
        raise UnsupportedAssert(f"this assert never calls the solution, so it tests nothing; {_HINT}")
    return AssertCheck(source=text, exprs=tuple(exprs), check=check)


def _split(node: ast.expr, exprs: list[str]) -> ast.expr:
    """Host-side copy of ``node`` with solution sub-expressions replaced by leaf slots."""
    if isinstance(node, ast.Constant):
        return node
    if isinstance(node, (ast.Tuple, ast.List)):
        return type(node)(elts=[_split(e, exprs) for e in node.elts], ctx=ast.Load())
    if isinstance(node, ast.Set):
        return ast.Set(elts=[_split(e, exprs) for e in node.elts])
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise UnsupportedAssert(f"`**` in a dict display is not supported in assert cases; {_HINT}")
        return ast.Dict(keys=[_split(k, exprs) for k in node.keys], values=[_split(v, exprs) for v in node.values])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
        return ast.UnaryOp(op=node.op, operand=_split(node.operand, exprs))
    if isinstance(node, ast.BinOp) and isinstance(node.op, _BINOPS):
        return ast.BinOp(left=_split(node.left, exprs), op=node.op, right=_split(node.right, exprs))
    if isinstance(node, ast.BoolOp):
        return ast.BoolOp(op=node.op, values=[_split(v, exprs) for v in node.values])
    if isinstance(node, ast.Compare):
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.Is, ast.IsNot)) and not (
                isinstance(right, ast.Constant) and right.value in (None, True, False)
            ):
                raise UnsupportedAssert(f"`is` is only supported against None, True or False; {_HINT}")
        operands = [_split(node.left, exprs)] + [_split(c, exprs) for c in node.comparators]
        for left, right in zip(operands, operands[1:], strict=False):
            if _has_leaf(left) and _has_leaf(right):
                raise UnsupportedAssert("both sides of a comparison would come from the solution's process, "
                                        "which can make them agree; compare the solution's value with an "
                                        f"expected value written out; {_HINT}")
        return ast.Compare(left=operands[0], ops=node.ops, comparators=operands[1:])
    if isinstance(node, ast.Subscript):
        return ast.Subscript(value=_split(node.value, exprs), slice=_split_slice(node.slice, exprs), ctx=ast.Load())
    if isinstance(node, ast.Name) and node.id in _HOST_TYPES:
        return node
    if _is_math(node):
        return node
    if isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id in _HOST_FUNCS) or _is_math(node.func)
    ):
        for kw in node.keywords:
            if kw.arg not in ("rel_tol", "abs_tol", "reverse", "ndigits", "start"):
                raise UnsupportedAssert(f"keyword `{kw.arg}` is not supported in the checking part of an "
                                        f"assert; {_HINT}")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise UnsupportedAssert(f"`*args` is not supported in the checking part of an assert; {_HINT}")
        return ast.Call(func=node.func, args=[_split(a, exprs) for a in node.args],
                        keywords=[ast.keyword(arg=k.arg, value=_split(k.value, exprs)) for k in node.keywords])
    if isinstance(node, (ast.Name, ast.Call, ast.Attribute)):
        return _leaf(node, exprs)
    raise UnsupportedAssert(f"`{ast.unparse(node)}` is not supported in assert cases; {_HINT}")


def _split_slice(node: ast.expr, exprs: list[str]) -> ast.expr:
    if isinstance(node, ast.Slice):
        return ast.Slice(*(None if part is None else _split(part, exprs) for part in (node.lower, node.upper, node.step)))
    return _split(node, exprs)


def _names_solution(node: ast.expr) -> bool:
    """True when ``node`` names something the solution may define: a name that is neither
    a builtin nor a standard-library module whose attribute is read (``math.factorial``)."""
    module_roots = {id(n.value) for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return any(
        isinstance(n, ast.Name) and n.id not in _BUILTIN_NAMES
        and not (id(n) in module_roots and n.id in sys.stdlib_module_names)
        for n in ast.walk(node)
    )  # fmt: skip


def _has_leaf(node: ast.expr) -> bool:
    return any(isinstance(n, ast.Name) and n.id.startswith("__leaf") for n in ast.walk(node))


def _is_math(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "math"
            and node.attr in _MATH)


def _leaf(node: ast.expr, exprs: list[str]) -> ast.expr:
    """A sub-expression the solution evaluates: its arguments are the case's inputs."""
    for inner in ast.walk(node):
        if isinstance(inner, _FORBIDDEN_IN_LEAF):
            raise UnsupportedAssert(f"`{ast.unparse(inner)}` inside a call of the solution is not supported "
                                    f"(the solution would see the check); {_HINT}")
    if not _names_solution(node):
        raise UnsupportedAssert(f"`{ast.unparse(node)}` names nothing of the solution's, so it would be an "
                                "expected value computed by the solution's own process (which can redefine "
                                f"it); write the expected value out, e.g. `assert fact(5) == 120`; {_HINT}")
    exprs.append(ast.unparse(node))
    return ast.Name(id=f"__leaf{len(exprs) - 1}", ctx=ast.Load())


# --- plain values from the sandbox -----------------------------------------------------

def decode(tagged: Any, depth: int = 0) -> Any:
    """The value ``inside.encode`` tagged; raises ``CheckFailed`` on anything malformed."""
    if depth > _MAX_DEPTH:
        raise CheckFailed("value nested too deeply")
    try:
        tag = tagged[0]
        if tag == "n":
            return None
        if tag == "b" and isinstance(tagged[1], bool):
            return tagged[1]
        if tag == "i":
            return int(tagged[1])
        if tag == "f":
            return float(tagged[1])
        if tag == "c":
            return complex(float(tagged[1]), float(tagged[2]))
        if tag == "s" and isinstance(tagged[1], str):
            return tagged[1]
        if tag == "y":
            return bytes.fromhex(tagged[1])
        if tag in ("l", "t", "S", "F"):
            items = [decode(v, depth + 1) for v in tagged[1]]
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        if tag == "d":
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in tagged[1]}
    except CheckFailed:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
        raise CheckFailed(f"the solution's value could not be read back ({type(exc).__name__})") from None
    raise CheckFailed("the solution's value could not be read back")


# --- the host check ----------------------------------------------------------------------

def _eval(node: ast.expr, leaves: list[Any]) -> Any:
    try:
        return _ev(node, leaves)
    except CheckFailed:
        raise
    except (ArithmeticError, TypeError, ValueError, IndexError, KeyError, RecursionError) as exc:
        raise CheckFailed(f"checking the solution's value raised {type(exc).__name__}: {exc}"[:300]) from None


def _ev(node: ast.expr, leaves: list[Any]) -> Any:  # noqa: C901 - one case per node type
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id.startswith("__leaf"):
            return leaves[int(node.id[6:])]
        return _HOST_TYPES[node.id]
    if isinstance(node, ast.Attribute):
        return _MATH[node.attr]
    if isinstance(node, ast.Tuple):
        return tuple(_ev(e, leaves) for e in node.elts)
    if isinstance(node, ast.List):
        return [_ev(e, leaves) for e in node.elts]
    if isinstance(node, ast.Set):
        return {_ev(e, leaves) for e in node.elts}
    if isinstance(node, ast.Dict):
        return {_ev(k, leaves): _ev(v, leaves) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.UnaryOp):
        operand = _ev(node.operand, leaves)
        if isinstance(node.op, ast.Not):
            return not operand
        _number(operand)
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        return _binop(node.op, _ev(node.left, leaves), _ev(node.right, leaves))
    if isinstance(node, ast.BoolOp):
        result = None
        for value_node in node.values:
            result = _ev(value_node, leaves)
            if isinstance(node.op, ast.And) and not result:
                return result
            if isinstance(node.op, ast.Or) and result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _ev(node.left, leaves)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _ev(right_node, leaves)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        value = _ev(node.value, leaves)
        if isinstance(node.slice, ast.Slice):
            parts = [None if p is None else _ev(p, leaves) for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            return value[slice(*parts)]
        return value[_ev(node.slice, leaves)]
    if isinstance(node, ast.Call):
        fn = _MATH[node.func.attr] if isinstance(node.func, ast.Attribute) else _HOST_FUNCS[node.func.id]
        args = [_ev(a, leaves) for a in node.args]
        kwargs = {k.arg: _ev(k.value, leaves) for k in node.keywords}
        if fn is str and args and not isinstance(args[0], (str, int, float, bool, type(None))):
            raise CheckFailed("str() in a check only takes a number or a string")
        if fn is sum and (len(args) > 1 or "start" in kwargs):
            _number((args[1:] or [kwargs["start"]])[0])  # a sequence start concatenates, quadratically
        if fn is round and len(args) > 1 and isinstance(args[1], int) and abs(args[1]) > _MAX_ROUND_DIGITS:
            raise CheckFailed("round() to that many digits is too costly to check")
        return fn(*args, **kwargs)
    raise CheckFailed(f"unsupported check node {type(node).__name__}")


def _number(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
        raise CheckFailed("integer too large to check")
    if not isinstance(value, (int, float, complex)):
        raise CheckFailed(f"arithmetic on a {type(value).__name__} in a check")


def _binop(op: ast.operator, left: Any, right: Any) -> Any:
    if isinstance(op, ast.Add) and isinstance(left, (str, list, tuple)) and type(left) is type(right):
        if _size(left) + _size(right) > _MAX_SEQ:
            raise CheckFailed("sequence too long to check")
        return left + right
    if isinstance(op, ast.Mult) and isinstance(left, (str, list, tuple)) != isinstance(right, (str, list, tuple)):
        seq, times = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
        if not isinstance(times, int) or _size(seq) * max(times, 0) > _MAX_SEQ:
            raise CheckFailed("sequence too long to check")
        return seq * times
    _number(left)
    _number(right)
    if isinstance(op, ast.Pow) and isinstance(right, int) and abs(right) > 64 and isinstance(left, int):
        raise CheckFailed("power too large to check")
    result = {
        ast.Add: lambda: left + right, ast.Sub: lambda: left - right, ast.Mult: lambda: left * right,
        ast.Div: lambda: left / right, ast.FloorDiv: lambda: left // right, ast.Mod: lambda: left % right,
        ast.Pow: lambda: left**right,
    }[type(op)]()  # fmt: skip
    _number(result)
    return result


def _size(value: Any) -> int:
    """Elements and characters inside ``value``, nested and shared ones counted each time
    (more than ``_MAX_SEQ`` raises ``CheckFailed``; the count stops there)."""
    size, stack = 0, [value]
    while stack and size <= _MAX_SEQ:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            size += len(item)
        elif isinstance(item, (list, tuple, set, frozenset, dict)):
            size += len(item)
            if size <= _MAX_SEQ:
                stack.extend(item.items() if isinstance(item, dict) else item)
    if size > _MAX_SEQ:
        raise CheckFailed("sequence too long to check")
    return size


def _compare(op: ast.cmpop, left: Any, right: Any) -> bool:
    if isinstance(op, ast.Eq):
        return left == right
    if isinstance(op, ast.NotEq):
        return left != right
    if isinstance(op, ast.Lt):
        return left < right
    if isinstance(op, ast.LtE):
        return left <= right
    if isinstance(op, ast.Gt):
        return left > right
    if isinstance(op, ast.GtE):
        return left >= right
    if isinstance(op, ast.Is):
        return left is right
    if isinstance(op, ast.IsNot):
        return left is not right
    if isinstance(op, ast.In):
        return left in right
    if isinstance(op, ast.NotIn):
        return left not in right
    raise CheckFailed(f"unsupported comparison {type(op).__name__}")
