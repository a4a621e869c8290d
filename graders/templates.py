"""Grader templates: ``{{item.a.b[0]}}``, ``{{sample.output_text}}``, ``{{sample.output_json.x}}``.

Two namespaces exist, as in OpenAI's graders:

- ``item``: the dataset row (every key of the JSONL line, ``messages`` included).
- ``sample``: the model's output: ``output_text``, ``output_json`` (the output parsed as
  JSON; filled from ``output_text`` on first use when the caller did not set it),
  ``output_tools``, ``choices``.

A path is dotted keys with ``[n]`` list indexes (``item.answers[0].text``); ``["key"]``
reads keys that contain dots or spaces. Rendering into text writes strings as they are
and every other value as compact JSON; a field that is exactly one template (``resolve``)
yields the raw value, so ``"{{item.reference}}"`` can produce an object.

Unknown variables raise ``GraderError`` at validate time (``check``) when the dataset
keys are known, and ``SampleError('invalid_variable_error')`` at grade time otherwise.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from graders.base import GraderError, SampleError

NAMESPACES = ("item", "sample")
SAMPLE_KEYS = ("output_text", "output_json", "output_tools", "choices", "output_audio")

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SEGMENT = re.compile(r"""\.([^.\[\]\s{}"]+)|\[(\d+)\]|\[\s*"([^"]*)"\s*\]|\[\s*'([^']*)'\s*\]""")
_HEAD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Ref:
    """One ``{{namespace.path}}`` reference."""

    namespace: str
    path: tuple[str | int, ...]
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and ``Ref`` parts, in order."""

    parts: tuple[str | Ref, ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        """The references, in order."""
        return tuple(p for p in self.parts if isinstance(p, Ref))

    @property
    def single_ref(self) -> Ref | None:
        """The reference when the template is exactly one tag (whitespace around allowed)."""
        non_blank = [p for p in self.parts if not (isinstance(p, str) and not p.strip())]
        if len(non_blank) == 1 and isinstance(non_blank[0], Ref):
            return non_blank[0]
        return None


def _parse_ref(body: str, param: str | None) -> Ref:
    raw = body.strip()
    head = _HEAD.match(raw)
    if head is None or head.group(0) not in NAMESPACES:
        raise GraderError(
            f"template '{{{{{raw}}}}}' must start with one of {', '.join(NAMESPACES)} "
            "(for example {{item.answer}} or {{sample.output_text}})",
            param,
        )
    pos = head.end()
    path: list[str | int] = []
    while pos < len(raw):
        m = _SEGMENT.match(raw, pos)
        if m is None:
            raise GraderError(f"cannot parse template '{{{{{raw}}}}}' at position {pos}", param)
        key, index, dq, sq = m.groups()
        if index is not None:
            path.append(int(index))
        else:
            path.append(key if key is not None else (dq if dq is not None else sq))
        pos = m.end()
    return Ref(head.group(0), tuple(path), raw)


@functools.lru_cache(maxsize=4096)
def _compile_cached(text: str) -> Template:
    return compile_template(text, None)


def compile_template(text: str, param: str | None = None) -> Template:
    """Parse ``text``; raises ``GraderError`` naming ``param`` on a malformed tag."""
    parts: list[str | Ref] = []
    pos = 0
    for m in _TAG.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        parts.append(_parse_ref(m.group(1), param))
        pos = m.end()
    if pos < len(text):
        parts.append(text[pos:])
    for p in parts:
        if isinstance(p, str) and "{{" in p:
            raise GraderError("unclosed template tag '{{' (expected '}}')", param)
    return Template(tuple(parts))


def get_template(text: str) -> Template:
    """Compiled template for ``text`` (cached; specs are validated before grading)."""
    return _compile_cached(text)


def check(text: str, param: str, item_keys: set[str] | None) -> None:
    """Validate ``text``'s tags; with ``item_keys`` also check ``item.<key>`` exists.

    Raises ``GraderError`` naming ``param``; the message says which variable is unknown.
    """
    tpl = compile_template(text, param)
    for ref in tpl.refs:
        if ref.namespace == "sample":
            if ref.path and ref.path[0] not in SAMPLE_KEYS:
                raise GraderError(
                    f"invalid_variable_error: unknown variable '{{{{{ref.text}}}}}'; "
                    f"sample has {', '.join(SAMPLE_KEYS)}",
                    param,
                )
        elif item_keys is not None and ref.path and ref.path[0] not in item_keys:
            known = ", ".join(sorted(item_keys)) or "(none)"
            raise GraderError(
                f"invalid_variable_error: unknown variable '{{{{{ref.text}}}}}'; "
                f"the dataset items have keys: {known}",
                param,
            )


def sample_json(sample: dict[str, Any]) -> Any:
    """``sample.output_json``, parsing ``output_text`` when it is absent.

    Raises ``SampleError('sample_parse_error')`` when the output is not JSON.
    """
    value = sample.get("output_json")
    if value is not None:
        return value
    text = sample.get("output_text")
    if not isinstance(text, str):
        raise SampleError("sample_parse_error", "sample has neither output_json nor output_text")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SampleError("sample_parse_error", f"output is not valid JSON: {exc}") from None


def lookup(ref: Ref, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    """The value ``ref`` points at; ``SampleError`` when it does not exist."""
    path = ref.path
    if ref.namespace == "sample":
        if not path:
            return sample
        if path[0] == "output_json":
            value: Any = sample_json(sample)
        elif path[0] in sample:
            value = sample[path[0]]
        else:
            raise SampleError("invalid_variable_error", f"'{{{{{ref.text}}}}}': sample has no {path[0]!r}")
        rest = path[1:]
    else:
        value = item
        rest = path
    for step in rest:
        try:
            if isinstance(step, int):
                if not isinstance(value, list):
                    raise KeyError(step)
                value = value[step]
            else:
                if not isinstance(value, dict):
                    raise KeyError(step)
                value = value[step]
        except (KeyError, IndexError):
            # A path the model's JSON lacks is the sample's fault (the output has the
            # wrong shape), not the grader's: a job's failing-grader check must not stop
            # training on it.
            in_output = ref.namespace == "sample" and path[0] == "output_json"
            raise SampleError(
                "sample_parse_error" if in_output else "invalid_variable_error",
                f"'{{{{{ref.text}}}}}' does not exist ({step!r} not found)",
            ) from None
    return value


def to_text(value: Any) -> str:
    """How a value is written into text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(text: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """Substitute every tag in ``text``; always returns a string."""
    tpl = get_template(text)
    if len(tpl.parts) == 1 and isinstance(tpl.parts[0], str):
        return text
    out = []
    for part in tpl.parts:
        out.append(part if isinstance(part, str) else to_text(lookup(part, sample, item)))
    return "".join(out)


def resolve(text: str, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    """Like ``render``, but a field that is exactly one tag yields the raw value."""
    tpl = get_template(text)
    ref = tpl.single_ref
    if ref is not None:
        return lookup(ref, sample, item)
    return render(text, sample, item)
