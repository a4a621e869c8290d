"""``endpoint`` graders against a real server on loopback, and the SSRF guard.

Refusals are checked with the HTTP layer replaced by a tripwire: the guard must refuse
before any connection is attempted, so no request to a refused address is ever sent.
Only numeric addresses and ``localhost`` are used, so no DNS query leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from graders import GraderContext, GraderError, grade, grade_batch, parse_grader
from graders import http as grader_http
from tests.graders.conftest import sample_of
from tests.loopback import serve


class Remote:
    """The user's grading service: answers by path; records what it received."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.fail_left = 1

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{mode}")
        async def score(mode: str, request: Request):
            body = await request.json()
            self.requests.append((mode, body, dict(request.headers)))
            if mode == "echo":
                return {"score": body["item"]["score"]}
            if mode == "flaky":
                self.fail_left -= 1
                if self.fail_left >= 0:
                    return JSONResponse({"detail": "busy"}, status_code=503)
                return {"score": 0.6}
            if mode == "slow":
                await asyncio.sleep(3)
                return {"score": 1.0}
            if mode == "redirect":
                return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=307)
            if mode == "huge":
                return Response(
                    b'{"score": 1, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                    media_type="application/json",
                )
            if mode == "not-json":
                return Response(b"<html>hi</html>", media_type="text/html")
            if mode == "no-score":
                return {"result": 1}
            if mode == "bad-score":
                return JSONResponse(content=json.loads('{"score": "high"}'))
            if mode == "error":
                return JSONResponse({"detail": "nope"}, status_code=404)
            return {"score": 0.5}

        return app


@pytest.fixture(scope="module")
def remote():
    r = Remote()
    with serve(r.app()) as url:
        yield r, url


@pytest.fixture
def ectx() -> GraderContext:
    return GraderContext(
        endpoint_allowlist=["127.0.0.1/32"], endpoint_timeout_s=1.0, endpoint_max_retries=2
    )


def spec_for(url: str, **extra) -> dict:
    return {"type": "endpoint", "name": "remote", "url": url, **extra}


CASES = [
    # id, item score, range, expected reward
    ("in-range", 0.75, None, 0.75),
    ("clipped-high", 3.0, None, 1.0),
    ("clipped-low", -1, None, 0.0),
    ("custom-range", 3.0, [0, 5], 3.0),
    ("integer", 1, None, 1.0),
]


@pytest.mark.parametrize(
    ("score", "rng", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_scores(remote, ectx, score, rng, expected):
    _, url = remote
    spec = parse_grader(spec_for(f"{url}/echo", **({"range": rng} if rng else {})))
    res = grade(spec, sample_of("hi"), {"score": score}, ectx)
    assert not res.failed, res.error_detail
    assert res.reward == expected


def test_request_body_and_headers(remote, ectx):
    r, url = remote
    spec = parse_grader(spec_for(f"{url}/echo", headers={"x-api-key": "k1"}))
    grade(spec, sample_of('{"a": "日本"}', {"a": "日本"}), {"score": 1, "q": "✓"}, ectx)
    mode, body, headers = r.requests[-1]
    assert body["sample"] == {"output_text": '{"a": "日本"}', "output_json": {"a": "日本"}}
    assert body["item"] == {"score": 1, "q": "✓"}
    assert len(body["trace_id"]) == 32
    assert headers["x-api-key"] == "k1"
    assert headers["host"] == url.removeprefix("http://")


FAILURES = [
    # id, path, flag, part of the detail
    ("timeout", "slow", "unresponsive_reward_error", "timed out"),
    ("http-error", "error", "unresponsive_reward_error", "HTTP 404"),
    (
        "redirect-not-followed",
        "redirect",
        "unresponsive_reward_error",
        "redirects are not followed",
    ),
    ("body-over-1mb", "huge", "unresponsive_reward_error", "larger than 1 MiB"),
    ("not-json", "not-json", "unresponsive_reward_error", "not JSON"),
    ("no-score", "no-score", "other_error", "score"),
    ("non-numeric-score", "bad-score", "other_error", "score"),
]


@pytest.mark.parametrize(
    ("path", "flag", "detail"), [c[1:] for c in FAILURES], ids=[c[0] for c in FAILURES]
)
def test_failures(remote, ectx, path, flag, detail):
    _, url = remote
    ctx = ectx.model_copy(update={"endpoint_max_retries": 0})
    res = grade(parse_grader(spec_for(f"{url}/{path}")), sample_of("x"), {}, ctx)
    assert res.reward == 0.0
    assert res.errors[flag], res.error_detail
    assert detail in res.error_detail


def test_retries_a_503(remote, ectx):
    r, url = remote
    r.fail_left = 1
    res = grade(parse_grader(spec_for(f"{url}/flaky")), sample_of("x"), {}, ectx)
    assert res.reward == 0.6
    assert [m for m, _, _ in r.requests].count("flaky") == 2


def test_request_over_1mb_is_refused(remote, ectx):
    _, url = remote
    res = grade(
        parse_grader(spec_for(f"{url}/echo")),
        sample_of("x" * (1024 * 1024 + 10)),
        {"score": 1},
        ectx,
    )
    assert res.errors["other_error"]
    assert "1 MiB" in res.error_detail


def test_rate_limit_spaces_requests(remote, ectx):
    _, url = remote
    spec = parse_grader(spec_for(f"{url}/echo?rl=1", rate_limit=10))
    start = time.perf_counter()
    results = grade_batch(spec, [sample_of("x")] * 6, [{"score": 1}] * 6, ectx)
    assert all(r.reward == 1.0 for r in results)
    # 6 requests at 10/s: the last one starts >= 0.5 s after the first.
    assert time.perf_counter() - start >= 0.45


REFUSED = [
    # id, url (every address is numeric, or localhost: nothing is resolved remotely)
    ("loopback-v4", "http://127.0.0.1:{port}/echo"),
    ("loopback-v4-other", "http://127.5.6.7/echo"),
    ("loopback-short-form", "http://127.1:{port}/echo"),
    ("loopback-decimal", "http://2130706433:{port}/echo"),
    ("localhost-name", "http://localhost:{port}/echo"),
    ("loopback-v6", "http://[::1]:{port}/echo"),
    ("unspecified-v4", "http://0.0.0.0:{port}/echo"),
    ("unspecified-v6", "http://[::]/echo"),
    ("private-10", "http://10.0.0.1/echo"),
    ("private-172", "http://172.16.5.4/echo"),
    ("private-192", "http://192.168.1.1/echo"),
    ("cgnat", "http://100.64.0.1/echo"),
    ("metadata-aws", "http://169.254.169.254/latest/meta-data/"),
    ("metadata-alibaba", "http://100.100.100.200/latest/meta-data/"),
    ("link-local-v6", "http://[fe80::1]/echo"),
    ("unique-local-v6", "http://[fd00::1]/echo"),
    ("multicast", "http://224.0.0.1/echo"),
    ("broadcast", "http://255.255.255.255/echo"),
    ("mapped-loopback", "http://[::ffff:127.0.0.1]:{port}/echo"),
    ("mapped-metadata", "http://[::ffff:169.254.169.254]/latest/meta-data/"),
    ("mapped-metadata-hex", "http://[::ffff:a9fe:a9fe]/latest/meta-data/"),
    ("mapped-private", "http://[::ffff:10.0.0.1]/echo"),
    ("compatible-loopback", "http://[::127.0.0.1]/echo"),
    ("6to4-loopback", "http://[2002:7f00:1::1]/echo"),
    ("6to4-metadata", "http://[2002:a9fe:a9fe::1]/echo"),
    ("https-metadata", "https://169.254.169.254/"),
]


@pytest.fixture
def tripwire(monkeypatch):
    """Replaces the HTTP layer: any attempt to send a request fails the test."""
    sent: list[str] = []

    def refuse(url, *args, **kwargs):
        sent.append(url)
        raise AssertionError(f"a request to {url} was sent")

    monkeypatch.setattr(grader_http, "post_json", refuse)
    return sent


@pytest.mark.parametrize("template", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_ssrf_refused_before_connecting(remote, tripwire, template):
    r, url = remote
    port = url.rsplit(":", 1)[1]
    before = len(r.requests)
    res = grade(
        parse_grader(spec_for(template.format(port=port))), sample_of("x"), {}, GraderContext()
    )
    assert res.reward == 0.0
    assert res.errors["other_error"]
    assert "non-public address" in res.error_detail
    assert tripwire == []
    assert len(r.requests) == before


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "127.0.0.1/32"])
def test_allowlist_entries(remote, allow):
    _, url = remote
    ctx = GraderContext(endpoint_allowlist=[allow])
    res = grade(parse_grader(spec_for(f"{url}/echo")), sample_of("x"), {"score": 0.5}, ctx)
    assert res.reward == 0.5


def test_allowlist_is_not_a_wildcard(tripwire):
    # Allowing one private network does not open the others (or metadata).
    ctx = GraderContext(endpoint_allowlist=["127.0.0.1/32"])
    for url in ("http://169.254.169.254/", "http://10.0.0.1/", "http://[::ffff:169.254.169.254]/"):
        res = grade(parse_grader(spec_for(url)), sample_of("x"), {}, ctx)
        assert res.errors["other_error"], url
    assert tripwire == []


@pytest.mark.parametrize(
    "url",
    ["http://user:pw@127.0.0.1/", "http:///nohost"],
    ids=["credentials-in-url", "no-host"],
)
def test_malformed_urls_refused(tripwire, url):
    res = grade(
        parse_grader(spec_for(url)),
        sample_of("x"),
        {},
        GraderContext(endpoint_allowlist=["127.0.0.1"]),
    )
    assert res.errors["other_error"]
    assert tripwire == []


INVALID = [
    ("scheme", spec_for("file:///etc/passwd"), "url"),
    ("gopher", spec_for("gopher://127.0.0.1/"), "url"),
    ("host-header", spec_for("https://example.com/", headers={"Host": "x"}), "headers"),
    ("rate-limit", spec_for("https://example.com/", rate_limit=0), "rate_limit"),
    ("range", spec_for("https://example.com/", range=[1, 1]), "range"),
]


@pytest.mark.parametrize(("spec", "param"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_specs(spec, param):
    with pytest.raises(GraderError) as info:
        parse_grader(spec)
    assert info.value.param == param


def test_public_addresses_pass_the_guard():
    import ipaddress

    for addr in ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"):
        assert grader_http.is_public(ipaddress.ip_address(addr))
