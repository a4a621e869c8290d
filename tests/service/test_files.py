"""Files API against a real `rft serve`, driven by the official openai client."""

from __future__ import annotations

import io
import json

import openai
import pytest

ROW = {"messages": [{"role": "user", "content": "Say hi"}], "answer": "hi"}


def jsonl(*rows: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def test_upload_list_retrieve_content_delete(api_server):
    client = api_server.client("files-a")
    body = jsonl(ROW, {**ROW, "answer": "hello"})
    created = client.files.create(file=("train.jsonl", io.BytesIO(body)), purpose="fine-tune")
    assert created.id.startswith("file-")
    assert created.bytes == len(body)
    assert created.filename == "train.jsonl"
    assert created.purpose == "fine-tune"

    listed = [f.id for f in client.files.list()]
    assert created.id in listed
    assert client.files.retrieve(created.id).bytes == len(body)
    assert client.files.content(created.id).read() == body

    deleted = client.files.delete(created.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    assert not list((api_server.data_dir / "files").glob(f"{created.id}*"))


def test_list_paginates(api_server):
    client = api_server.client("files-pages")
    ids = [client.files.create(file=(f"f{i}.jsonl", io.BytesIO(jsonl(ROW))), purpose="fine-tune").id for i in range(5)]
    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    seen = [f.id for f in client.files.list(limit=2)]  # iterating fetches every page
    assert sorted(seen) == sorted(ids)


BAD_UPLOADS = [
    pytest.param(b"not json\n", "line 1", id="invalid-json"),
    pytest.param(jsonl(ROW) + b"[1, 2]\n", "line 2", id="not-an-object"),
    pytest.param(jsonl(ROW, ROW) + jsonl({"answer": 1}), "line 3", id="missing-messages"),
    pytest.param(jsonl({"messages": []}), "line 1", id="empty-messages"),
    pytest.param(jsonl({"messages": [{"role": "wizard", "content": "x"}]}), "line 1", id="unknown-role"),
    pytest.param(jsonl({"messages": [{"role": "user", "content": 5}]}), "line 1", id="content-not-text"),
    pytest.param(jsonl({"messages": ["hi"]}), "line 1", id="message-not-object"),
    pytest.param(b"", "empty", id="empty-file"),
    pytest.param(b"\n\n", "empty", id="blank-lines-only"),
    pytest.param(jsonl(ROW) + b"\xff\xfe\n", "line 2", id="not-utf8"),
]


@pytest.mark.parametrize("body, expected", BAD_UPLOADS)
def test_bad_upload_names_the_line(api_server, body, expected):
    client = api_server.client("files-bad")
    before = sorted(p.name for p in (api_server.data_dir / "files").iterdir())
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("bad.jsonl", io.BytesIO(body)), purpose="fine-tune")
    error = err.value.body
    assert expected in error["message"].lower()
    assert error["param"] == "file"
    assert sorted(p.name for p in (api_server.data_dir / "files").iterdir()) == before
    assert not list((api_server.data_dir / "tmp").iterdir())
    assert list(client.files.list()) == []


def test_wrong_purpose_is_refused_and_leaves_nothing(api_server):
    client = api_server.client("files-purpose")
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("a.jsonl", io.BytesIO(jsonl(ROW))), purpose="batch")
    assert err.value.body["param"] == "purpose"
    assert list(client.files.list()) == []
    assert not list((api_server.data_dir / "tmp").iterdir())


def test_missing_or_wrong_key_is_401(api_server):
    with api_server.http(project=None) as http:
        assert http.get("/v1/files").status_code == 401
        wrong = http.get("/v1/files", headers={"Authorization": "Bearer rft-nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/healthz").status_code == 200


def test_other_projects_file_reads_404(api_server):
    mine = api_server.client("files-owner")
    theirs = api_server.client("files-other")
    created = mine.files.create(file=("a.jsonl", io.BytesIO(jsonl(ROW))), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        theirs.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        theirs.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        theirs.files.delete(created.id)
    assert created.id not in [f.id for f in theirs.files.list()]


def test_oversize_upload_is_413_and_leaves_nothing(tmp_path):
    from tests.server import start_server

    server = start_server(tmp_path / "data", env={"RFT_MAX_UPLOAD_BYTES": "2000"})
    try:
        big = jsonl(*([ROW] * 200))  # about 12 kB, over the 2 kB cap
        with server.http("big") as http:
            declared = http.post("/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"})
            assert declared.status_code == 413
            assert declared.json()["error"]["code"] == "payload_too_large"

            # Chunked upload (no Content-Length): refused while streaming.
            boundary = "rftboundary"
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
                    f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n").encode()

            def chunks():
                yield head
                for i in range(0, len(big), 500):
                    yield big[i:i + 500]
                yield f"\r\n--{boundary}--\r\n".encode()

            streamed = http.post("/v1/files", content=chunks(),
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            assert streamed.status_code == 413
        assert not list((server.data_dir / "files").iterdir())
        assert not list((server.data_dir / "tmp").iterdir())
    finally:
        server.stop()


def test_errors_use_the_envelope(api_server):
    with api_server.http("files-env") as http:
        missing = http.get("/v1/files/file-nope")
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        bad_limit = http.get("/v1/files", params={"limit": "abc"})
        assert bad_limit.status_code == 400
        assert bad_limit.json()["error"]["param"] == "limit"
        unknown_route = http.get("/v1/nothing-here")
        assert unknown_route.status_code == 404
        assert "error" in unknown_route.json()


def test_a_line_nested_too_deeply_is_refused_with_its_line_number(api_server):
    client = api_server.client("deep-lines")
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    deep = '{"messages": [{"role": "user", "content": "x"}], "x": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(openai.BadRequestError) as exc:
        client.files.create(file=("d.jsonl", (good + "\n" + deep + "\n").encode()), purpose="fine-tune")
    assert "line 2" in exc.value.body["message"] and "nested" in exc.value.body["message"]
