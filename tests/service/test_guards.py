"""service.guards in process: the JSON depth check, strict JSON parsing, name checks and
RequestGuard's own 500 (the end-to-end behaviour is in test_input_limits.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import InvalidRequest, install_error_handlers
from service.guards import (
    MAX_JSON_DEPTH,
    RequestGuard,
    check_json_depth,
    clean_filename,
    fits_name,
    fits_path,
    parse_json_body,
)
from service.settings import Settings


def depth(value) -> int:
    """Reference: how deep ``value`` nests (a scalar is 0, ``[]`` is 1)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nest(levels: int, kinds: str = "[{") -> bytes:
    """``levels`` of alternating arrays and objects around ``1``."""
    opens, closes = [], []
    for i in range(levels):
        if kinds[i % len(kinds)] == "[":
            opens.append('["a]", ')
            closes.append("]")
        else:
            opens.append('{"k}[": ')
            closes.append("}")
    return ("".join(opens) + "1" + "".join(reversed(closes))).encode()


@pytest.mark.parametrize("kinds", ["[", "{", "[{"])
def test_depth_limit_is_exact(kinds):
    check_json_depth(nest(MAX_JSON_DEPTH, kinds))
    with pytest.raises(InvalidRequest) as err:
        check_json_depth(nest(MAX_JSON_DEPTH + 1, kinds))
    assert err.value.code == "json_too_deep"


def test_brackets_inside_strings_are_text():
    text = '\\"[[[' * 1000  # escaped quotes must not end the string
    check_json_depth(json.dumps({"a": "[" * 10_000, "b": text, "c": "\\" * 7 + "[" * 500}).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.text(alphabet='[]{}"\\k', max_size=3), children, max_size=3),
    max_leaves=400,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=json_values, pad=st.integers(0, MAX_JSON_DEPTH + 5))
def test_depth_check_agrees_with_the_parsed_depth(value, pad):
    raw = b"[" * pad + json.dumps(value).encode() + b"]" * pad
    if depth(value) + pad > MAX_JSON_DEPTH:
        with pytest.raises(InvalidRequest):
            check_json_depth(raw)
    else:
        check_json_depth(raw)


@pytest.mark.parametrize("raw", [
    b'{"a": NaN}', b'[Infinity]', b'[-Infinity]', b'[1e400]', b'"\\ud800"', b'["\\udfff", 1]',
    b'"\xff"', b"{", b"[1,]", b"9" * 5000, b"[" * 5000,
])
def test_what_strict_json_refuses_is_a_400(raw):
    with pytest.raises(InvalidRequest):
        parse_json_body(raw)


def test_strict_json_keeps_what_it_allows():
    assert parse_json_body(b"") is None
    assert parse_json_body(b'"\\ud83d\\ude00"') == "\U0001f600"  # a paired surrogate escape
    assert parse_json_body(b'"\\\\ud800"') == "\\ud800"  # an escaped backslash, not an escape
    assert parse_json_body(b'{"a": 1, "a": 2}') == {"a": 2}


def test_names():
    assert fits_name("x" * 255) and not fits_name("x" * 256)
    assert not fits_name("é" * 128)  # 256 bytes of UTF-8
    assert not fits_name("a\x00b")
    assert fits_path("/models/" + "x" * 255) and not fits_path("/models/" + "x" * 256)
    assert not fits_path("/a" * 2100)
    assert clean_filename(" \x1b[1mre\u202eport\x00.jsonl\n") == "[1mreport.jsonl"
    assert clean_filename("données 😀.jsonl") == "données 😀.jsonl"


def test_an_unexpected_error_is_a_500_envelope_and_not_reraised(tmp_path):
    """uvicorn closes the connection on any exception it sees; the guard answers the
    route's unexpected error itself, so the client keeps its connection."""
    router = APIRouter()

    @router.post("/boom")
    async def boom() -> dict:
        raise RuntimeError("internal detail")

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(RequestGuard, routes=router.routes, settings=Settings(data_dir=tmp_path),
                       store=None, streamed=frozenset())

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # re-raises whatever the app raises
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/boom", json={"a": 1})

    response = asyncio.run(call())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "internal detail" not in response.text
