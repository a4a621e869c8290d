"""A JSON Schema subset compiled to a character-level recogniser of schema-valid prefixes.

``compile_schema(schema)`` checks ``schema`` against its meta-schema, then against the
subset below, and returns the root ``Node``; ``SchemaPrefix(root)`` then says, one
character at a time, whether the text so far can still be extended to one JSON object
that the schema accepts. ``complete`` is true once that object has closed. The
training-time token mask (``jobs.structured.logits``) drives it the same way it drives
``JsonPrefix``.

The subset (anything else is refused with ``SchemaError`` naming its path, never ignored):

- ``type``: one of object, array, string, number, integer, boolean, null, or a list of
  them (a union such as ``["string", "null"]``). No ``type`` means any JSON value.
- ``enum`` (and ``const``): strings, numbers, booleans and null. A value is written
  exactly as ``json.dumps`` writes it (``1.0`` stays ``1.0``, non-ASCII stays as it is).
- object: ``properties``, ``required``, ``additionalProperties`` (false, true, or a
  schema for the extra values; absent means true, as in JSON Schema). Property names
  may not contain quotes, backslashes or control characters.
- array: ``items`` (absent: any value), ``minItems``, ``maxItems``.
- annotations, accepted and without effect on sampling: ``title``, ``description``,
  ``$comment``, ``examples``, ``default``, ``deprecated``, ``readOnly``, ``writeOnly``,
  ``$schema``.
- the root schema is ``{"type": "object", ...}``: a completion is one JSON object.

What the recogniser produces is a stricter language than the schema allows, never a
looser one: an integer is written without fraction or exponent, an enum value in its
``json.dumps`` spelling, an object key that might spell a declared property never uses
a backslash escape, and whitespace runs are capped at ``MAX_WHITESPACE_RUN`` (as in
``JsonPrefix``) so a model cannot stall on blank lines until the token limit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable
from typing import Any, NamedTuple

import jsonschema

from jobs.structured.json_prefix import MAX_WHITESPACE_RUN, PrefixState

TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "deprecated",
                         "readOnly", "writeOnly", "$schema"})
OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})
ARRAY_KEYWORDS = frozenset({"items", "minItems", "maxItems"})
SUPPORTED = ANNOTATIONS | OBJECT_KEYWORDS | ARRAY_KEYWORDS | {"type", "enum", "const"}
MAX_DEPTH = 32

_WS = " \t\n\r"
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"
_ESCAPES = '"\\/bfnrtu'
_LITERALS = {"t": "true", "f": "false", "n": "null"}
# Number states after each character: "-", "0", "int", ".", "frac", "e", "esign", "exp".
_NUMBER_ENDS = ("0", "int", "frac", "exp")


class SchemaError(ValueError):
    """A schema rft cannot enforce; ``path`` leads to the offending keyword."""

    def __init__(self, message: str, path: tuple[str | int, ...]):
        super().__init__(message)
        self.path = path


class Node:
    """One compiled (sub)schema: the values it admits, as the recogniser needs them."""

    __slots__ = ("types", "numeric", "enum", "properties", "required", "additional", "items",
                 "min_items", "max_items")

    def __init__(self, types: frozenset[str], enum: tuple[str, ...] | None = None):
        self.types = types
        # The number grammar to use: "number" admits integers too.
        self.numeric = "number" if "number" in types else "integer" if "integer" in types else None
        self.enum = enum  # the json.dumps spelling of each admitted value, or None
        self.properties: dict[str, Node] = {}
        self.required: frozenset[str] = frozenset()
        self.additional: Node | None = None  # schema of undeclared keys' values; None: none allowed
        self.items: Node | None = None
        self.min_items = 0
        self.max_items: int | None = None


def _any_node() -> Node:
    node = Node(frozenset(TYPES))
    node.additional = node.items = node
    return node


ANY = _any_node()


def compile_schema(schema: Any) -> Node:
    """Check ``schema`` (meta-schema, then rft's subset) and compile it; raises SchemaError."""
    if not isinstance(schema, dict):
        raise SchemaError("the schema must be a JSON object.", ())
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaError(f"not a valid JSON Schema: {exc.message}", tuple(exc.absolute_path)) from None
    if schema.get("type") != "object" or "enum" in schema or "const" in schema:
        raise SchemaError('the root schema must be {"type": "object", ...}: a completion is one JSON object.',
                          ("type",))
    return _compile(schema, (), 0)


def _compile(schema: Any, path: tuple, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise SchemaError(f"schemas nested deeper than {MAX_DEPTH} levels are not supported.", path)
    if schema is True:
        return ANY
    if not isinstance(schema, dict):
        raise SchemaError("only object schemas (and true) are supported here.", path)
    for key in schema:
        if key not in SUPPORTED:
            raise SchemaError(
                f"'{key}' cannot be enforced while sampling, so rft refuses it. Supported keywords: "
                + ", ".join(sorted(SUPPORTED - ANNOTATIONS)) + " (and annotations such as description).",
                (*path, key))
    declared = schema.get("type")
    types = frozenset(TYPES) if declared is None else frozenset([declared] if isinstance(declared, str)
                                                                 else declared)
    for group, needs in ((OBJECT_KEYWORDS, "object"), (ARRAY_KEYWORDS, "array")):
        for key in group & schema.keys():
            if needs not in types or "enum" in schema or "const" in schema:
                raise SchemaError(f"'{key}' applies to type {needs} only; this schema's values cannot be "
                                  f"{needs}s.", (*path, key))
    if "enum" in schema or "const" in schema:
        if "enum" in schema and "const" in schema:
            raise SchemaError("use enum or const, not both.", (*path, "const"))
        return Node(types, _enum(schema, types, path))
    node = Node(types)
    if "object" in types:
        _compile_object(node, schema, path, depth)
    if "array" in types:
        node.items = _compile(schema.get("items", True), (*path, "items"), depth + 1)
        node.min_items = schema.get("minItems", 0)
        node.max_items = schema.get("maxItems")
        if node.max_items is not None and node.max_items < node.min_items:
            raise SchemaError("minItems is larger than maxItems: no array fits.", (*path, "minItems"))
    return node


def _enum(schema: dict, types: frozenset[str], path: tuple) -> tuple[str, ...]:
    key = "enum" if "enum" in schema else "const"
    values = schema["enum"] if key == "enum" else [schema["const"]]
    if not values:
        raise SchemaError("enum must list at least one value.", (*path, key))
    spellings: list[str] = []
    for i, value in enumerate(values):
        where = (*path, key, i) if key == "enum" else (*path, key)
        kind = _scalar_type(value)
        if kind is None:
            raise SchemaError("enum values must be strings, numbers, booleans or null.", where)
        if "type" in schema and not ({kind, "number"} & types if kind == "integer" else kind in types):
            raise SchemaError(f"enum value {json.dumps(value)} is not of the schema's type.", where)
        spellings.append(json.dumps(value, ensure_ascii=False))
    return tuple(dict.fromkeys(spellings))


def _scalar_type(value: Any) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return ("integer" if value.is_integer() else "number") if math.isfinite(value) else None
    if isinstance(value, str):
        return "string"
    return None


def _compile_object(node: Node, schema: dict, path: tuple, depth: int) -> None:
    for name, sub in schema.get("properties", {}).items():
        if any(ch in name for ch in '"\\') or any(ord(ch) < 0x20 for ch in name):
            raise SchemaError("property names with quotes, backslashes or control characters are not "
                              "supported.", (*path, "properties", name))
        node.properties[name] = _compile(sub, (*path, "properties", name), depth + 1)
    extra = schema.get("additionalProperties", True)
    if extra is not False:
        node.additional = _compile(extra, (*path, "additionalProperties"), depth + 1)
    required = schema.get("required", [])
    for i, name in enumerate(required):
        if name in node.properties:
            continue
        if node.additional is None:
            raise SchemaError(f"required property '{name}' is not in properties and additionalProperties is "
                              "false: no object fits.", (*path, "required", i))
        if any(ch in name for ch in '"\\') or any(ord(ch) < 0x20 for ch in name):
            raise SchemaError("property names with quotes, backslashes or control characters are not "
                              "supported.", (*path, "required", i))
        # A required undeclared key takes the additionalProperties schema.
        node.properties[name] = node.additional
    node.required = frozenset(required)


# Recogniser frames, innermost last. Each is an immutable tuple, so a state's stack is
# cheap to copy and, as a tuple, a hashable cache key.
_KEY_OR_CLOSE, _KEY, _COLON, _MEMBER_VALUE, _COMMA_OR_CLOSE, _VALUE_OR_CLOSE, _ITEM = range(7)


class _Value(NamedTuple):  # a value of ``node`` is due (whitespace may come first)
    node: Node


class _Str(NamedTuple):  # inside a free string value; esc as in JsonPrefix
    esc: int


class _Enum(NamedTuple):  # spelling one of ``cands``; ``text`` typed so far
    text: str
    cands: tuple[str, ...]


class _Num(NamedTuple):
    integer: bool
    state: str


class _Lit(NamedTuple):  # the rest of true / false / null
    rest: str


class _Obj(NamedTuple):
    node: Node
    seen: frozenset
    expect: int
    pending: Node | None  # schema of the value after the colon


class _Key(NamedTuple):  # a key that may still spell one of ``cands`` (declared names)
    text: str
    cands: tuple[str, ...]


class _FreeKey(NamedTuple):  # a key that can no longer spell a declared name
    esc: int


class _Arr(NamedTuple):
    node: Node
    count: int
    expect: int


_AGAIN = object()  # the top frame ended without taking the character: offer it to the parent


class SchemaPrefix(PrefixState):
    """Incremental schema-valid JSON-object prefix check; see the module docstring."""

    __slots__ = ("stack", "ws_run", "complete")

    def __init__(self, root: Node):
        self.stack: list[tuple] = [_Value(root)]
        self.ws_run = 0
        self.complete = False

    @property
    def free_text(self) -> bool:
        """Inside a free string (not an enum or a key that may spell a declared name) with
        no escape pending: characters other than ``"``, ``\\`` and controls keep the state."""
        top = self.stack[-1] if self.stack else None
        return type(top) in (_Str, _FreeKey) and not top.esc

    def key(self) -> Hashable:
        """A hashable snapshot: equal keys accept exactly the same continuations."""
        return (tuple(self.stack), self.ws_run, self.complete)

    def copy(self) -> SchemaPrefix:
        other = SchemaPrefix.__new__(SchemaPrefix)
        other.stack, other.ws_run, other.complete = list(self.stack), self.ws_run, self.complete
        return other

    def feed(self, ch: str) -> bool:
        """Advance by one character; False when the character cannot come next."""
        while True:
            result = self._step(ch)
            if result is not _AGAIN:
                return result

    def _step(self, ch: str):
        if self.complete:
            return self._whitespace(ch)
        top = self.stack[-1]
        kind = type(top)
        if kind is _Str or kind is _FreeKey:
            return self._string(top, ch)
        if kind is _Key:
            return self._key(top, ch)
        if kind is _Enum:
            return self._enum(top, ch)
        if kind is _Num:
            return self._number(top, ch)
        if kind is _Lit:
            if ch != top.rest[0]:
                return False
            if len(top.rest) == 1:
                self._value_done()
            else:
                self.stack[-1] = _Lit(top.rest[1:])
            return True
        if ch in _WS:
            return self._whitespace(ch)
        self.ws_run = 0
        if kind is _Value:
            return self._start_value(top.node, ch)
        if kind is _Obj:
            return self._object(top, ch)
        return self._array(top, ch)

    def _whitespace(self, ch: str) -> bool:
        if ch not in _WS:
            return False
        self.ws_run += 1
        return self.ws_run <= MAX_WHITESPACE_RUN

    def _value_done(self) -> None:
        """The top frame's value has ended: pop it and move its container on."""
        self.stack.pop()
        if not self.stack:
            self.complete = True
            return
        parent = self.stack[-1]
        if type(parent) is _Obj:
            self.stack[-1] = parent._replace(expect=_COMMA_OR_CLOSE, pending=None)
        else:
            self.stack[-1] = parent._replace(count=parent.count + 1, expect=_COMMA_OR_CLOSE)

    def _start_value(self, node: Node, ch: str):
        if node.enum is not None:
            self.stack[-1] = _Enum("", node.enum)
            return _AGAIN
        types = node.types
        if ch == '"' and "string" in types:
            self.stack[-1] = _Str(0)
        elif ch == "{" and "object" in types:
            self.stack[-1] = _Obj(node, frozenset(), _KEY_OR_CLOSE, None)
        elif ch == "[" and "array" in types:
            self.stack[-1] = _Arr(node, 0, _VALUE_OR_CLOSE)
        elif (ch == "-" or ch in _DIGITS) and node.numeric is not None:
            state = "-" if ch == "-" else "0" if ch == "0" else "int"
            self.stack[-1] = _Num(node.numeric == "integer", state)
        elif ch in _LITERALS and ("null" if ch == "n" else "boolean") in types:
            self.stack[-1] = _Lit(_LITERALS[ch][1:])
        else:
            return False
        return True

    def _string(self, top, ch: str) -> bool:
        esc = top.esc
        if esc == 1:
            if ch not in _ESCAPES:
                return False
            self.stack[-1] = type(top)(5 if ch == "u" else 0)
            return True
        if esc:
            if ch not in _HEX:
                return False
            self.stack[-1] = type(top)(esc - 1 if esc > 2 else 0)
            return True
        if ch == "\\":
            self.stack[-1] = type(top)(1)
        elif ch == '"':
            if type(top) is _Str:
                self._value_done()
            else:
                self.stack.pop()
                obj = self.stack[-1]
                self.stack[-1] = obj._replace(expect=_COLON, pending=obj.node.additional)
        elif ord(ch) < 0x20:
            return False
        return True

    def _enum(self, top: _Enum, ch: str):
        text = top.text + ch
        cands = tuple(c for c in top.cands if c.startswith(text))
        if cands:
            self.stack[-1] = _Enum(text, cands)
            if cands == (text,):  # spelled out, and no longer value starts with it
                self._value_done()
            return True
        if top.text in top.cands:  # e.g. "1" when "10" is admitted too, then ","
            self._value_done()
            return _AGAIN
        return False

    def _number(self, top: _Num, ch: str):
        state = top.state
        nxt = None
        if ch in _DIGITS:
            nxt = "0" if ch == "0" and state == "-" else {
                "-": "int", "int": "int", ".": "frac", "frac": "frac", "e": "exp", "esign": "exp",
                "exp": "exp"}.get(state)
        elif not top.integer:
            if ch == "." and state in ("0", "int"):
                nxt = "."
            elif ch in "eE" and state in ("0", "int", "frac"):
                nxt = "e"
            elif ch in "+-" and state == "e":
                nxt = "esign"
        if nxt is not None:
            self.stack[-1] = _Num(top.integer, nxt)
            return True
        if state in _NUMBER_ENDS:
            self._value_done()
            return _AGAIN
        return False

    def _more_keys(self, obj: _Obj) -> bool:
        node = obj.node
        return node.additional is not None or any(n not in obj.seen for n in node.properties)

    def _object(self, obj: _Obj, ch: str):
        expect = obj.expect
        closable = obj.node.required <= obj.seen
        if expect in (_KEY_OR_CLOSE, _KEY):
            if ch == '"' and self._more_keys(obj):
                node = obj.node
                # Without additional keys only unseen names can come; with them, every
                # declared name is tracked so that a repeated one is refused at its close.
                names = tuple(n for n in node.properties if node.additional is not None or n not in obj.seen)
                self.stack.append(_Key("", names) if names else _FreeKey(0))
                return True
            if ch == "}" and expect == _KEY_OR_CLOSE and closable:
                self._value_done()
                return True
            return False
        if expect == _COLON:
            if ch != ":":
                return False
            self.stack[-1] = obj._replace(expect=_MEMBER_VALUE)
            self.stack.append(_Value(obj.pending))
            return True
        if expect == _COMMA_OR_CLOSE:
            if ch == "," and self._more_keys(obj):
                self.stack[-1] = obj._replace(expect=_KEY)
                return True
            if ch == "}" and closable:
                self._value_done()
                return True
        return False

    def _key(self, top: _Key, ch: str) -> bool:
        obj = self.stack[-2]
        node = obj.node
        if ch == '"':
            if top.text in top.cands:
                if top.text in obj.seen:
                    return False  # a repeated key
                self.stack.pop()
                self.stack[-1] = obj._replace(seen=obj.seen | {top.text}, expect=_COLON,
                                              pending=node.properties[top.text])
                return True
            if node.additional is None:
                return False
            self.stack.pop()
            self.stack[-1] = obj._replace(expect=_COLON, pending=node.additional)
            return True
        text = top.text + ch
        cands = tuple(c for c in top.cands if c.startswith(text))
        if cands:
            self.stack[-1] = _Key(text, cands)
            return True
        # Leaving every declared name: an extra key, if allowed. Not through an escape,
        # which could spell a declared name another way (``n\u0061me``).
        if node.additional is None or ch == "\\" or ord(ch) < 0x20:
            return False
        self.stack[-1] = _FreeKey(0)
        return True

    def _array(self, arr: _Arr, ch: str):
        node = arr.node
        if arr.expect == _VALUE_OR_CLOSE:
            if ch == "]":
                if node.min_items:
                    return False
                self._value_done()
                return True
            if node.max_items == 0:
                return False
            self.stack[-1] = arr._replace(expect=_ITEM)
            self.stack.append(_Value(node.items))
            return _AGAIN
        if arr.expect == _COMMA_OR_CLOSE:
            if ch == "," and (node.max_items is None or arr.count < node.max_items):
                self.stack[-1] = arr._replace(expect=_ITEM)
                self.stack.append(_Value(node.items))
                return True
            if ch == "]" and arr.count >= node.min_items:
                self._value_done()
                return True
        return False
