"""Hostile and malformed input against a real `rft serve`: bodies are bounded and the
key is checked before they are read, and no input reaches a 5xx (issue 9, items 2-3).

Every error must be the OpenAI envelope, and a 4xx must keep the client's keep-alive
connection (a 500 used to drop it): ``assert_kept`` checks that the next request goes
out on the same TCP connection.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.server import start_server
from tests.service.conftest import FAKE_MODEL, upload_rows

MiB = 1024 * 1024
CHAT = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
DEEP = 100_000


def assert_envelope(response: httpx.Response, status: int | tuple[int, ...]) -> dict:
    """``response`` has ``status`` and the OpenAI error envelope; returns the error."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def local_port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def assert_kept(client: httpx.Client, response: httpx.Response) -> None:
    """The connection ``response`` came on is still open and usable."""
    assert response.headers.get("connection", "").lower() != "close"
    after = client.get("/v1/models")
    assert after.status_code == 200
    assert local_port(after) == local_port(response), "the server closed the connection"


def headers_only(port: int, request: str) -> tuple[int, dict]:
    """Send only the head of ``request`` (no body, whatever Content-Length says) and read
    the answer: proves the server answered without reading the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request.encode() + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before an answer"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk
            body += chunk
    return int(lines[0].split()[1]), json.loads(body)


def rss_peak_reset(pid: int) -> None:
    # "5" resets the peak RSS (VmHWM) of a process we own.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def stream(total: int, piece: bytes = b"[" * MiB):
    """``total`` bytes from a generator: the test never holds the body either."""
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


# --- the body is bounded, and the key comes first ---------------------------------


# The graders routes take pydantic bodies, which FastAPI reads before it resolves the
# key dependency: they are the routes that held a gigabyte (issue 9).
@pytest.mark.parametrize("path", ["/v1/fine_tuning/alpha/graders/run", "/v1/fine_tuning/alpha/graders/validate",
                                  "/v1/fine_tuning/jobs", "/v1/chat/completions", "/v1/files"])
def test_300_mb_without_a_key_is_refused_unread(hardened_server, path):
    pid = hardened_server.proc.pid
    with hardened_server.http(None) as client:
        client.get("/healthz")  # warm the connection and the process
        before = rss_kib(pid, "VmRSS")
        rss_peak_reset(pid)
        start = time.monotonic()
        response = client.post(path, content=stream(300 * MiB),
                               headers={"content-type": "application/json"})
        elapsed = time.monotonic() - start
        error = assert_envelope(response, 401)
        assert error["code"] == "invalid_api_key"
        growth_mib = (rss_kib(pid, "VmHWM") - before) / 1024
        assert growth_mib < 50, f"the API grew by {growth_mib:.0f} MiB"
        assert elapsed < 60
        # uvicorn discarded the rest of the body as it came; the connection still works.
        after = client.get("/healthz")
        assert after.status_code == 200 and local_port(after) == local_port(response)


def test_300_mb_with_a_key_stops_at_the_json_cap(hardened_server):
    pid = hardened_server.proc.pid
    with hardened_server.http() as client:
        client.get("/v1/models")
        before = rss_kib(pid, "VmRSS")
        rss_peak_reset(pid)
        response = client.post("/v1/fine_tuning/jobs", content=stream(300 * MiB),
                               headers={"content-type": "application/json"})
        error = assert_envelope(response, 413)
        assert "16777216-byte limit" in error["message"]
        growth_mib = (rss_kib(pid, "VmHWM") - before) / 1024
        assert growth_mib < 50, f"the API grew by {growth_mib:.0f} MiB"
        assert_kept(client, response)


@pytest.mark.parametrize("path", ["/v1/fine_tuning/jobs", "/v1/fine_tuning/alpha/graders/run", "/v1/files"])
def test_key_is_checked_before_any_body_byte(hardened_server, path):
    status, body = headers_only(hardened_server.port, (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * MiB}\r\n"))
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = headers_only(hardened_server.port, (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer rft-wrong\r\n"
        f"Content-Length: {10 * MiB}\r\n"))
    assert status == 401 and body["error"]["message"] == "Incorrect API key provided."


@pytest.mark.parametrize("path, length", [
    ("/v1/fine_tuning/jobs", 16 * MiB + 1),
    ("/v1/chat/completions", 300 * MiB),
    ("/v1/fine_tuning/alpha/graders/validate", 16 * MiB + 1),
    ("/v1/files", 512 * MiB + 1),  # uploads keep their own, larger cap
])
def test_declared_length_over_the_cap_is_refused_unread(hardened_server, path, length):
    status, body = headers_only(hardened_server.port, (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {hardened_server.key()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"))
    assert status == 413 and body["error"]["code"] == "payload_too_large"


def test_json_cap_is_a_setting_and_uploads_keep_theirs(tmp_path):
    server = start_server(tmp_path / "data", env={"RFT_MAX_JSON_BODY_BYTES": "2000"})
    try:
        with server.http() as client:
            body = {**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}
            response = client.post("/v1/chat/completions", json=body)
            assert "2000-byte limit" in assert_envelope(response, 413)["message"]
            assert_kept(client, response)
            # Chunked (no Content-Length): counted as it arrives.
            response = client.post("/v1/chat/completions", content=stream(10_000, b" " * 1000))
            assert_envelope(response, 413)
            assert_kept(client, response)
            # An upload far over 2000 bytes is not a JSON body.
            upload_rows(server.client(), rows=[{"messages": [{"role": "user", "content": "y" * 5000}]}])
    finally:
        server.stop()


# --- no 5xx from malformed input ----------------------------------------------------

DEEP_BODIES = {
    "arrays": b"[" * DEEP + b"]" * DEEP,
    "objects": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "unbalanced": b"[" * DEEP,
    "inside-a-field": b'{"model": "fuzz-base", "metadata": ' + b"[" * DEEP + b"]" * DEEP + b"}",
}


@pytest.mark.parametrize("path", ["/v1/fine_tuning/jobs", "/v1/chat/completions", "/v1/completions",
                                  "/v1/fine_tuning/alpha/graders/validate", "/v1/fine_tuning/alpha/graders/run"])
@pytest.mark.parametrize("kind", DEEP_BODIES)
def test_deep_nesting_is_a_400(hardened_server, path, kind):
    with hardened_server.http() as client:
        response = client.post(path, content=DEEP_BODIES[kind], headers={"content-type": "application/json"})
        error = assert_envelope(response, 400)
        assert error["code"] in ("json_too_deep", "invalid_request")
        if kind != "unbalanced":
            assert "deeper than 128 levels" in error["message"]
        assert_kept(client, response)


def test_nesting_up_to_the_limit_is_parsed(hardened_server):
    # 127 levels under the top-level object: refused for what it says, not for its depth.
    metadata = b"[" * 127 + b"]" * 127
    with hardened_server.http() as client:
        response = client.post("/v1/fine_tuning/jobs", content=b'{"model": "fuzz-base", "metadata": ' + metadata + b"}")
        error = assert_envelope(response, 400)
        assert error["code"] != "json_too_deep"


LONG_IDS = ["x" * 256, "x" * 4000, "é" * 200, "a%00b", "..", "ft:" + "m" * 300]


@pytest.mark.parametrize("bad", LONG_IDS)
def test_long_or_odd_ids_are_404_on_every_operation(hardened_server, bad):
    job = hardened_server.job_id
    operations = [
        ("GET", f"/v1/files/{bad}"), ("DELETE", f"/v1/files/{bad}"), ("GET", f"/v1/files/{bad}/content"),
        ("GET", f"/v1/fine_tuning/jobs/{bad}"), ("POST", f"/v1/fine_tuning/jobs/{bad}/cancel"),
        ("POST", f"/v1/fine_tuning/jobs/{bad}/pause"), ("POST", f"/v1/fine_tuning/jobs/{bad}/resume"),
        ("GET", f"/v1/fine_tuning/jobs/{bad}/events"), ("GET", f"/v1/fine_tuning/jobs/{bad}/checkpoints"),
        ("GET", f"/v1/fine_tuning/jobs/{bad}/checkpoints/step-1/content"),
        ("GET", f"/v1/fine_tuning/jobs/{job}/checkpoints/{bad}/content"),
        ("GET", f"/v1/models/{bad}"), ("DELETE", f"/v1/models/{bad}"), ("GET", f"/v1/models/{bad}/content"),
    ]
    with hardened_server.http() as client:
        for method, path in operations:
            response = client.request(method, path)
            assert_envelope(response, 404)
            assert_kept(client, response)


@pytest.mark.parametrize("bad", ["x" * 256, "é" * 200, "a\x00b", "ft:" + "m" * 300, "/" + "d" * 300 + "/m"])
def test_long_or_odd_model_names_in_bodies(hardened_server, bad):
    with hardened_server.http() as client:
        for path, body in [("/v1/chat/completions", {**CHAT, "model": bad}),
                           ("/v1/completions", {"model": bad, "prompt": "hi"})]:
            response = client.post(path, json=body)
            assert assert_envelope(response, 404)["code"] == "model_not_found"
            assert_kept(client, response)
        response = client.post("/v1/fine_tuning/jobs", json={
            "model": bad, "training_file": hardened_server.training_file, "method": {"type": "reinforcement"}})
        error = assert_envelope(response, 400)
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert_kept(client, response)


@pytest.mark.parametrize("prompt", ["", [], ["", "x"], ["x", ""]])
def test_empty_completions_prompt_is_a_400(hardened_server, prompt):
    with hardened_server.http() as client:
        response = client.post("/v1/completions", json={"model": FAKE_MODEL, "prompt": prompt})
        assert assert_envelope(response, 400)["param"] == "prompt"
        assert_kept(client, response)


def multipart(filename: bytes, content: bytes, boundary: bytes = b"rft-test-boundary") -> bytes:
    """A raw form (``purpose`` and ``file``): the openai client and httpx percent-encode
    control characters in file names, so hostile names are written by hand."""
    return b"".join([
        b"--", boundary, b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n',
        b"--", boundary, b'\r\nContent-Disposition: form-data; name="file"; filename="', filename,
        b'"\r\nContent-Type: application/jsonl\r\n\r\n', content, b"\r\n--", boundary, b"--\r\n",
    ])


ROW = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode() + b"\n"
FORM = {"content-type": "multipart/form-data; boundary=rft-test-boundary"}


@pytest.mark.parametrize("filename", [b"a" * 10_000, b"a" * 4_000, "é".encode() * 300])
def test_long_multipart_filenames_are_a_400(hardened_server, filename):
    with hardened_server.http() as client:
        response = client.post("/v1/files", content=multipart(filename, ROW), headers=FORM)
        assert assert_envelope(response, 400)["param"] == "file"
        assert_kept(client, response)
    assert not list((hardened_server.data_dir / "tmp").iterdir())


def test_control_characters_are_cut_from_stored_file_names(hardened_server):
    name = b"\x1b[31mtr\x00ain\x07\x7f\xe2\x80\xaelnoj.jsonl"  # ESC, NUL, BEL, DEL, RLO (U+202E)
    with hardened_server.http() as client:
        response = client.post("/v1/files", content=multipart(name, ROW), headers=FORM)
        assert response.status_code == 200, response.text
        stored = response.json()["filename"]
        assert stored == "[31mtrainlnoj.jsonl"
        content = client.get(f"/v1/files/{response.json()['id']}/content")
        assert content.status_code == 200 and "\x1b" not in content.headers["content-disposition"]
        only_controls = client.post("/v1/files", content=multipart(b"\x01\x02", ROW), headers=FORM)
        assert only_controls.json()["filename"] == "upload.jsonl"


@pytest.mark.parametrize("body, headers", [
    (b"--b\r\n" + b"X-Pad: " + b"p" * 5000 + b"\r\n\r\n", {"content-type": "multipart/form-data; boundary=b"}),
    (b"".join(b"--b\r\nX-%d: v\r\n" % i for i in range(20)), {"content-type": "multipart/form-data; boundary=b"}),
    (b"not a form", {"content-type": "multipart/form-data; boundary=" + "b" * 100}),
    (b"garbage\r\n--b--", {"content-type": "multipart/form-data; boundary=b"}),
    (b"".join(b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(40)) + b"--b--\r\n",
     {"content-type": "multipart/form-data; boundary=b"}),
    (multipart(b"a.jsonl", ROW)[:-len(b"--rft-test-boundary--\r\n")]
     + b'--rft-test-boundary\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n'
     + ROW + b"\r\n--rft-test-boundary--\r\n", FORM),
])
def test_malformed_multipart_is_a_400(hardened_server, body, headers):
    with hardened_server.http() as client:
        response = client.post("/v1/files", content=body, headers=headers)
        assert_envelope(response, 400)
        assert_kept(client, response)
    assert not list((hardened_server.data_dir / "tmp").iterdir())


def _without_ids(error: dict) -> dict:
    return {**error, "message": error["message"].replace("'", "").split(" id ")[0]}


def test_another_projects_cursor_reads_like_an_unknown_one(hardened_server):
    theirs_file = hardened_server.training_file  # project "default"
    theirs_job = hardened_server.job_id
    with hardened_server.http("cursor-other") as client:
        for path, foreign, unknown in [
            ("/v1/files", theirs_file, "file-doesnotexist"),
            ("/v1/fine_tuning/jobs", theirs_job, "ftjob-doesnotexist"),
        ]:
            foreign_answer = client.get(path, params={"after": foreign})
            unknown_answer = client.get(path, params={"after": unknown})
            assert foreign_answer.status_code == unknown_answer.status_code == 400
            assert _without_ids(foreign_answer.json()["error"]) == _without_ids(unknown_answer.json()["error"])
    # The owner still pages with its own ids.
    with hardened_server.http() as client:
        assert client.get("/v1/files", params={"after": theirs_file}).status_code == 200
        assert client.get("/v1/fine_tuning/jobs", params={"after": theirs_job}).status_code == 200
        events = client.get(f"/v1/fine_tuning/jobs/{theirs_job}/events").json()["data"]
        page = client.get(f"/v1/fine_tuning/jobs/{theirs_job}/events", params={"after": events[0]["id"]})
        assert page.status_code == 200


@pytest.mark.parametrize("raw", [
    b'{"model": "fuzz-base", "seed": NaN}', b'{"model": "fuzz-base", "seed": Infinity}',
    b'{"model": "fuzz-base", "seed": 1e999}', b'{"model": "fuzz-base", "suffix": "\\ud800"}',
    b'{"model": "fuzz-base", "suffix": "\xff\xfe"}', b'{"model": "fuzz-base", "seed": ' + b"9" * 5000 + b"}",
])
@pytest.mark.parametrize("path", ["/v1/fine_tuning/jobs", "/v1/chat/completions", "/v1/completions",
                                  "/v1/fine_tuning/alpha/graders/validate"])
def test_json_that_python_takes_but_json_does_not(hardened_server, path, raw):
    with hardened_server.http() as client:
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert_envelope(response, 400)
        assert_kept(client, response)


def test_a_grader_echoed_back_cannot_carry_a_lone_surrogate(hardened_server):
    # /validate answers with the grader: a lone surrogate in it failed while the answer
    # was written (a 500), after FastAPI's own parser had taken it.
    raw = (b'{"grader": {"type": "string_check", "name": "\\ud800", "input": "a", "reference": "b",'
           b' "operation": "eq"}}')
    with hardened_server.http() as client:
        response = client.post("/v1/fine_tuning/alpha/graders/validate", content=raw,
                               headers={"content-type": "application/json"})
        assert "surrogate" in assert_envelope(response, 400)["message"]
        assert_kept(client, response)
