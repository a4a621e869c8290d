"""A small arithmetic language for ``multi.calculate_output`` (never ``eval``).

Grammar (precedence climbing; ``^`` is right-associative and binds tighter than unary
minus, as in mathematics: ``-2^2 == -4``)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("+" | "-") unary | power
    power   := atom ("^" unary)?
    atom    := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Names are the ``multi`` grader's keys. Functions: ``min`` and ``max`` (one or more
arguments), ``abs floor ceil exp sqrt log`` (one argument; ``log`` is natural).

A formula is at most ``MAX_CHARS`` characters and its tree at most ``MAX_DEPTH`` deep:
parsing and evaluation recurse, and a formula such as ``((((...))))`` or
``1+1+...+1`` must be refused as a formula error, not crash with ``RecursionError``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_CHARS = 1000
MAX_DEPTH = 100

FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # Called with the arguments spread out: builtin min(x) / max(x) of a single float
    # would try to iterate it.
    "min": (lambda *xs: min(xs), None),
    "max": (lambda *xs: max(xs), None),
    "abs": (abs, 1),
    "floor": (lambda x: float(math.floor(x)), 1),
    "ceil": (lambda x: float(math.ceil(x)), 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}

_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(.))"
)


class FormulaError(ValueError):
    """The formula cannot be parsed, or names an unknown variable or function."""


@dataclass(frozen=True, slots=True)
class Num:
    value: float


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]


Node = Num | Var | Unary | Binary | Call


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace can fail to match
            break
        number, name, op = m.groups()
        if number is not None:
            tokens.append(("num", number))
        elif name is not None:
            tokens.append(("name", name))
        elif op in "+-*/^(),":
            tokens.append(("op", op))
        else:
            raise FormulaError(f"unexpected character {op!r} at position {m.start(3)}")
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.pos = 0
        self.level = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FormulaError(
                "unexpected end of formula" + (f" (expected {value!r})" if value else "")
            )
        if value is not None and tok[1] != value:
            raise FormulaError(f"expected {value!r}, found {tok[1]!r}")
        self.pos += 1
        return tok

    def is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] in ops

    def expr(self) -> Node:
        node = self.term()
        while self.is_op("+", "-"):
            op = self.take()[1]
            node = Binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.is_op("*", "/"):
            op = self.take()[1]
            node = Binary(op, node, self.unary())
        return node

    def unary(self) -> Node:
        # Every recursive path (unary signs, "^" exponents, parentheses, call
        # arguments) passes through here, so this bounds the parser's stack.
        self.level += 1
        try:
            if self.level > MAX_DEPTH:
                raise FormulaError(f"formula is nested deeper than {MAX_DEPTH} levels")
            if self.is_op("+", "-"):
                op = self.take()[1]
                return Unary(op, self.unary())
            return self.power()
        finally:
            self.level -= 1

    def power(self) -> Node:
        node = self.atom()
        if self.is_op("^"):
            self.take()
            node = Binary("^", node, self.unary())
        return node

    def atom(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            return Num(float(value))
        if kind == "name":
            if self.is_op("("):
                if value not in FUNCTIONS:
                    raise FormulaError(f"unknown function {value!r}; known: {', '.join(FUNCTIONS)}")
                self.take("(")
                args = [self.expr()]
                while self.is_op(","):
                    self.take()
                    args.append(self.expr())
                self.take(")")
                arity = FUNCTIONS[value][1]
                if arity is not None and len(args) != arity:
                    raise FormulaError(f"{value}() takes {arity} argument, got {len(args)}")
                return Call(value, tuple(args))
            return Var(value)
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        raise FormulaError(f"unexpected {value!r}")


def parse(text: str, variables: set[str] | None = None) -> Node:
    """Parse ``text``; with ``variables`` also check every name is one of them."""
    if not text.strip():
        raise FormulaError("formula is empty")
    if len(text) > MAX_CHARS:
        raise FormulaError(f"formula is longer than {MAX_CHARS} characters")
    parser = _Parser(text)
    node = parser.expr()
    if parser.peek() is not None:
        raise FormulaError(f"unexpected {parser.peek()[1]!r} after a complete expression")
    if depth(node) > MAX_DEPTH:
        raise FormulaError(f"formula is nested deeper than {MAX_DEPTH} levels")
    if variables is not None:
        unknown = sorted(names(node) - variables)
        if unknown:
            raise FormulaError(
                f"unknown variable(s) {', '.join(unknown)}; the graders are: {', '.join(sorted(variables))}"
            )
    return node


def depth(node: Node) -> int:
    """Height of the tree (iterative: it runs before the depth is known to be safe)."""
    best = 0
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        current, level = stack.pop()
        best = max(best, level)
        if isinstance(current, Unary):
            stack.append((current.operand, level + 1))
        elif isinstance(current, Binary):
            stack.extend(((current.left, level + 1), (current.right, level + 1)))
        elif isinstance(current, Call):
            stack.extend((arg, level + 1) for arg in current.args)
    return best


def names(node: Node) -> set[str]:
    """Variable names used in ``node``."""
    if isinstance(node, Var):
        return {node.name}
    if isinstance(node, Unary):
        return names(node.operand)
    if isinstance(node, Binary):
        return names(node.left) | names(node.right)
    if isinstance(node, Call):
        return set().union(*(names(a) for a in node.args))
    return set()


def evaluate(node: Node, env: dict[str, float]) -> float:
    """Evaluate; raises ``ArithmeticError``/``ValueError`` on a math domain error."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Var):
        return env[node.name]
    if isinstance(node, Unary):
        value = evaluate(node.operand, env)
        return -value if node.op == "-" else value
    if isinstance(node, Binary):
        a, b = evaluate(node.left, env), evaluate(node.right, env)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if node.op == "/":
            return a / b
        result = a**b
        if isinstance(result, complex):
            raise ValueError(f"{a} ^ {b} is not a real number")
        return float(result)
    func = FUNCTIONS[node.name][0]
    return float(func(*(evaluate(a, env) for a in node.args)))
