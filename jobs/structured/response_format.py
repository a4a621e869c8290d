"""``method.reinforcement.response_format`` -> the recogniser that constrains sampling.

Torch-free: the API process calls ``parse_response_format`` at job creation (a refusal
there is a 400 naming the field), the trainer child calls it again on the stored value
to get the recogniser its token mask uses, so both apply the same rules.

- absent, null or ``{"type": "text"}``: no constraint.
- ``{"type": "json_object"}``: each completion is one JSON object (``JsonPrefix``).
- ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"?, "description"?}}``:
  each completion is one JSON object valid under ``schema``, for the subset that
  ``jobs.structured.schema`` documents. ``strict`` is accepted with either value; rft
  enforces the schema while sampling whatever it says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from jobs.structured.json_prefix import JsonPrefix
from jobs.structured.schema import SchemaError, SchemaPrefix, compile_schema

TYPES = ("text", "json_object", "json_schema")
SCHEMA_FIELDS = {"name", "schema", "strict", "description"}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ResponseFormatError(ValueError):
    """A response_format rft refuses; ``param`` is the dotted path inside it (None: the
    value itself). The message is written to follow that path: "<path>: <message>"."""

    def __init__(self, message: str, param: str | None):
        super().__init__(message)
        self.param = param


def parse_response_format(value: Any) -> Callable[[], JsonPrefix | SchemaPrefix] | None:
    """Check ``value``; return a factory of fresh recogniser states, or None for no constraint."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ResponseFormatError("must be an object such as {\"type\": \"json_object\"}.", None)
    kind = value.get("type")
    if kind not in TYPES:
        raise ResponseFormatError(f"must be one of {list(TYPES)}, got {kind!r}.", "type")
    allowed = {"type", "json_schema"} if kind == "json_schema" else {"type"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ResponseFormatError(f"unknown field for response_format type {kind}.", unknown[0])
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonPrefix
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise ResponseFormatError("must be an object with name and schema.", "json_schema")
    unknown = sorted(set(spec) - SCHEMA_FIELDS)
    if unknown:
        raise ResponseFormatError("unknown field; json_schema takes name, schema, strict and description.",
                                  f"json_schema.{unknown[0]}")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ResponseFormatError("must be 1 to 64 letters, digits, '_' or '-'.",
                                  "json_schema.name")
    if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
        raise ResponseFormatError("must be a boolean.", "json_schema.strict")
    if spec.get("description") is not None and not isinstance(spec["description"], str):
        raise ResponseFormatError("must be a string.", "json_schema.description")
    if "schema" not in spec:
        raise ResponseFormatError("is required.", "json_schema.schema")
    try:
        root = compile_schema(spec["schema"])
    except SchemaError as exc:
        param = ".".join(["json_schema", "schema", *(str(p) for p in exc.path)])
        raise ResponseFormatError(str(exc), param) from None
    return partial(SchemaPrefix, root)


def describe(value: Any) -> str:
    """A short description of a response_format for the job's events."""
    if value is None or value.get("type") == "text":
        return "unconstrained text"
    if value["type"] == "json_object":
        return "one JSON object (response_format json_object)"
    return f"JSON valid under schema '{value['json_schema']['name']}' (response_format json_schema)"
