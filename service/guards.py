"""Guards against hostile or malformed input, so no input reaches a 5xx.

- ``RequestGuard``: a pure ASGI middleware that checks the bearer key before any body
  byte is read, bounds every body before it is buffered, and refuses JSON bodies that
  are not strict JSON or nest deeper than ``MAX_JSON_DEPTH``.
- ``parse_json_body``: the one parser of the routes that take free-form JSON.
- ``fits_name`` / ``fits_path``: names that may reach the file system.
- ``clean_filename``: upload names without control characters.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from array import array
from itertools import accumulate
from typing import Any

import anyio
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.store import Store
from service.deps import CALLER_STATE, authenticate, get_current_caller
from service.errors import (
    ApiError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    error_body,
    server_error_body,
)
from service.rate_limit import RATE_STATE, RateLimiter, with_rate_headers
from service.settings import Settings

log = logging.getLogger(__name__)

# Deepest JSON a body may nest. A structured-output schema at its own limit
# (jobs.structured.schema.MAX_DEPTH = 32 levels, two JSON levels each: "properties" and
# the property) sits about 70 levels down a job body; nothing else legitimate comes
# close. 128 is far below the ~1000 levels where Python's recursion (json, pydantic, the
# graders' walkers) breaks.
MAX_JSON_DEPTH = 128

# The longest file name most file systems allow (NAME_MAX), in bytes, and the longest
# path (PATH_MAX). A longer name can name nothing on disk; asking the OS raises
# ENAMETOOLONG, which is how such a name used to become a 500.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4095


def fits_name(value: str) -> bool:
    """True when ``value`` can be one file name: at most 255 UTF-8 bytes, no NUL."""
    return "\x00" not in value and len(value.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES


def fits_path(value: str) -> bool:
    """True when ``value`` can be a path: every ``/``-separated part ``fits_name`` and the
    whole is under PATH_MAX."""
    return (len(value.encode("utf-8", "surrogatepass")) <= MAX_PATH_BYTES
            and all(fits_name(part) for part in value.split("/")))


# Unicode's control (Cc), format (Cf: bidi overrides that make "exe.txt" read
# "txt.exe", zero-width characters) and line/paragraph separators (Zl, Zp). In a stored
# name they break Content-Disposition headers, logs and listings.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def clean_filename(name: str) -> str:
    """``name`` without control characters and surrounding blanks."""
    return "".join(ch for ch in name if unicodedata.category(ch) not in _CONTROL_CATEGORIES).strip()


# --- JSON --------------------------------------------------------------------------

_OPEN_CLOSE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[]", b"\x01\xff")  # +1 / -1 as signed bytes
_CHUNK = 1 << 16


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels; flatten it.",
        code="json_too_deep",
    )


def _outside_strings(raw: bytes) -> bytes:
    """``raw`` without the contents of its JSON strings, whose brackets are text.
    Escaped backslashes go first (left to right, as a parser pairs them), then escaped
    quotes; every quote left opens or closes a string."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(unescaped.split(b'"')[::2])


def check_json_depth(raw: bytes) -> None:
    """Refuse ``raw`` when its JSON nests deeper than ``MAX_JSON_DEPTH``, before any
    recursive parser (json, pydantic, the graders' walkers) sees it.

    Exact for JSON, and all but the last step at C speed: strings are cut out, the
    brackets left are made one kind, a few ``replace(b"[]", b"")`` passes peel the
    shallow pairs most bodies are made of (each pass removes every innermost pair:
    exactly one level), and a running sum over what is left finds the deepest point,
    stopping at the first chunk that passes the limit. A 16 MiB body of crafted
    brackets costs up to a second of CPU; RequestGuard runs big bodies off the event loop.
    What is not JSON (unbalanced brackets) is left to the parser to refuse.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # cannot nest deeper than it has brackets: most bodies stop here
    brackets = _outside_strings(raw).translate(_OPEN_CLOSE, _NOT_BRACKETS)
    peeled = 0
    while peeled < 4 and len(brackets) > MAX_JSON_DEPTH:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets, peeled = shorter, peeled + 1
    if len(brackets) <= MAX_JSON_DEPTH - peeled:
        return
    steps = array("b", brackets.translate(_STEPS))
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        sums = list(accumulate(steps[start:start + _CHUNK], initial=depth))
        if peeled + max(sums) > MAX_JSON_DEPTH:
            raise _too_deep()
        depth = sums[-1]


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a request body; 400 when it is not JSON, too deep, or holds
    what strict JSON cannot carry on: NaN / Infinity (as literals or as numbers too large
    for a float) and unpaired UTF-16 surrogate escapes. Those parse in Python but fail
    later, when the body is forwarded (httpx writes strict UTF-8 JSON), stored
    (PostgreSQL refuses both) or echoed in an answer, which used to be a 500."""
    check_json_depth(raw)
    try:
        value = json.loads(raw or b"null")
    except RecursionError:  # unbalanced and deep, so check_json_depth left it
        raise _too_deep() from None
    except ValueError:  # UnicodeDecodeError included
        raise InvalidRequest("The request body is not valid JSON.") from None
    try:
        # One C-speed pass finds both: what the forwarder and the database will do.
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:
        raise InvalidRequest("The request body has an unpaired UTF-16 surrogate escape "
                             "(\\ud800-\\udfff); send text as valid Unicode.") from None
    except ValueError:
        raise InvalidRequest("The request body holds NaN, Infinity or a number too large for "
                             "a float, which JSON does not allow.") from None
    return value


# --- the middleware ----------------------------------------------------------------

# Bodies whose checks may take more than a few milliseconds go to a thread, so the
# event loop keeps serving other requests meanwhile.
_THREAD_BODY_BYTES = 1 << 20


def _needs_key(dependant) -> bool:
    return any(d.call is get_current_caller or _needs_key(d) for d in dependant.dependencies)


class RequestGuard:
    """Key first, then a bounded body: an unauthenticated client can make the API hold
    nothing, and an authenticated one at most the route's cap.

    For each request that matches a route:

    1. A route that needs a key checks it before reading any body byte (the same code as
       ``CurrentCaller``, read-only), answering 401 otherwise; the caller found is
       left in the request state so the dependency does not look it up again.
       A key's request over its rate (``service.rate_limit``, the internal token
       exempt) is answered 429 here, still unread; every answer to a keyed request
       carries the key's ``x-ratelimit-*-requests`` headers.
    2. A declared ``Content-Length`` over the route's cap is refused with 413 unread.
    3. Upload routes (``streamed``) are passed through with their bytes counted: past
       the cap a 413 is raised from ``receive`` (the upload code streams to disk and
       removes its temp file). Every other route is a JSON route: its body is read here
       up to ``max_json_body_bytes`` (413 past it, while counting chunked bodies too),
       checked to be strict JSON no deeper than ``MAX_JSON_DEPTH`` (``parse_json_body``,
       400 otherwise), and handed on whole. The route would buffer it anyway.

    A body left unread by an early answer is discarded by uvicorn as it arrives (never
    buffered) and the connection stays open. Closing it instead would make most clients
    lose the answer: a socket closed with unread input sends a reset.

    Unmatched paths and wrong methods pass straight through: the router answers 404 /
    405 without reading the body. An exception that escapes a route before the answer
    has started is answered here with the generic 500 envelope and not re-raised, so
    uvicorn keeps the client's connection (it closes it on any exception it sees).
    """

    def __init__(self, app: ASGIApp, *, routes: list[APIRoute], settings: Settings, store: Store,
                 streamed: frozenset[tuple[str, str]]) -> None:
        self.app = app
        # The routers' own APIRoutes (full paths), matched here as Starlette matches
        # them: FastAPI's app-level route list is an implementation detail that changes
        # between versions.
        self.routes = [(route, _needs_key(route.dependant)) for route in routes]
        self.settings = settings
        self.store = store
        self.streamed = streamed
        self.rate_limiter = (RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
                             if settings.rate_limit_per_second else None)

    def _limit_rate(self, scope: Scope, key_id: str) -> None:
        """Take a token of the key's bucket (service.rate_limit); 429 when it has none.
        On the event loop, before any body byte is read."""
        rate = self.rate_limiter.take(key_id)
        scope["state"][RATE_STATE] = rate  # every answer carries its headers
        if not rate.allowed:
            raise RateLimited(
                f"Rate limit reached for this API key: {rate.limit} requests at once, {rate.per_second:g} per "
                f"second sustained (RFT_RATE_LIMIT_BURST, RFT_RATE_LIMIT_PER_SECOND). Retry after "
                f"{rate.retry_after} s.", headers={"Retry-After": rate.retry_after})

    def _route(self, scope: Scope) -> tuple[APIRoute, bool] | None:
        for route, needs_key in self.routes:
            if route.matches(scope)[0] is Match.FULL:
                return route, needs_key
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul = _nul_refusal(scope)
        if nul is not None:
            await _answer(nul, scope, receive, send)
            return
        matched = self._route(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = with_rate_headers(scope, message)
            await send(message)

        try:
            try:
                app_receive = await self._admit(scope, receive, *matched)
            except ApiError as exc:
                await _answer(exc, scope, receive, tracked_send)
                return
            if app_receive is None:
                return  # the client left while sending its body
            await self.app(scope, app_receive, tracked_send)
        except Exception:
            if started:
                raise  # a half-sent answer: only closing the connection can end it
            log.exception("unhandled error")
            await JSONResponse(server_error_body(), status_code=500)(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive, route: APIRoute,
                     needs_key: bool) -> Receive | None:
        """Check the key and bound the body; the ``receive`` the app should read from."""
        headers = Headers(scope=scope)
        if needs_key:
            caller = await anyio.to_thread.run_sync(
                authenticate, self.store, self.settings, headers.get("authorization", ""))
            if caller is not None:
                scope.setdefault("state", {})[CALLER_STATE] = caller
                if self.rate_limiter is not None:
                    self._limit_rate(scope, caller.key_id)
        declared = headers.get("content-length")
        if declared is None and "transfer-encoding" not in headers:
            return receive  # no body
        streamed = (scope["method"], route.path) in self.streamed
        cap = self.settings.max_upload_bytes if streamed else self.settings.max_json_body_bytes
        too_large = _too_large(cap, streamed)
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise too_large
        if streamed:
            return _counted(receive, cap, too_large)
        body = await _read_body(receive, cap, too_large)
        if body is None:
            return None
        if body:
            # Parsed here and again by the route: the graders routes' pydantic bodies
            # are parsed by FastAPI, which takes NaN and lone surrogates, and they fail
            # only when the answer echoing them is written (a 500).
            if len(body) > _THREAD_BODY_BYTES:
                await anyio.to_thread.run_sync(parse_json_body, body)
            else:
                parse_json_body(body)
        return _replay(body, receive)


def _nul_refusal(scope: Scope) -> ApiError | None:
    """No id, name or parameter of this API holds NUL, and PostgreSQL refuses it in text
    (a 500 when a looked-up id carried one): a path with one is unknown, a query with
    one is invalid."""
    if "\x00" in scope["path"]:
        return NotFound("Not Found")
    if b"%00" in scope.get("query_string", b""):
        return InvalidRequest("Query parameters must not contain NUL characters.")
    return None


def _too_large(cap: int, streamed: bool) -> PayloadTooLarge:
    if streamed:
        return PayloadTooLarge(f"The upload is larger than the {cap}-byte limit.", param="file")
    return PayloadTooLarge(f"The request body is larger than the {cap}-byte limit of this route.")


async def _answer(exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(error_body(exc.message, exc.error_type, exc.param, exc.code),
                            status_code=exc.status_code, headers=exc.headers)
    await response(scope, receive, send)


async def _read_body(receive: Receive, cap: int, too_large: PayloadTooLarge) -> bytes | None:
    """The whole body, or None when the client disconnects first; raise past ``cap``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then the client's own messages (a route
    that watches for the disconnect still sees it)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _counted(receive: Receive, cap: int, too_large: PayloadTooLarge) -> Receive:
    """``receive`` that raises ``too_large`` once more than ``cap`` body bytes came in.
    The upload route lets it propagate (cleaning up), and the app's ApiError handler
    renders it."""
    size = 0

    async def counted() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > cap:
                raise too_large
        return message

    return counted
