"""The audit trail (GET /v1/audit_events) and key expiry, against a real ``rft serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import openai
import pytest
from sqlalchemy import select

from jobs.store import Model, Project, Store, now
from service.cli import parse_duration
from tests.server import rft, start_server
from tests.service.conftest import FAKE_CONFIG, FAKE_MODEL, upload_rows

GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}
METHOD = {"type": "reinforcement", "reinforcement": {"grader": GRADER}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The API alone (no worker), with the config-only base model ``fuzz-base``."""
    data = tmp_path_factory.mktemp("audit") / "data"
    (data / "models" / FAKE_MODEL).mkdir(parents=True)
    (data / "models" / FAKE_MODEL / "config.json").write_text(json.dumps(FAKE_CONFIG))
    server = start_server(data)
    yield server
    server.stop()


def keys(server, *args: str) -> str:
    return rft("keys", *args, "--data-dir", str(server.data_dir))


def key_id(server, plain: str) -> str:
    """The id ``rft keys list`` shows for the plain key ``plain``."""
    for line in keys(server, "list").splitlines():
        if line.split("\t")[2] == plain[:10] + "...":
            return line.split("\t")[0]
    raise AssertionError("key not listed")


def events(server, project: str, **params) -> dict:
    r = server.http(project).get("/v1/audit_events", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def all_events(server, project: str, **params) -> list[dict]:
    return events(server, project, limit=100, **params)["data"]


def test_every_state_change_is_recorded_once_with_its_key(server):
    client = server.client("audit-a")
    kid = key_id(server, server.key("audit-a"))
    train = upload_rows(client)
    job = client.fine_tuning.jobs.create(model=FAKE_MODEL, training_file=train, method=METHOD,
                                         extra_headers={"Idempotency-Key": "audit-1"})
    again = client.fine_tuning.jobs.create(model=FAKE_MODEL, training_file=train, method=METHOD,
                                           extra_headers={"Idempotency-Key": "audit-1"})
    assert again.id == job.id  # a replay: no second job, no second event
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)  # refused: nothing changed, nothing recorded
    client.fine_tuning.jobs.pause(job.id)
    client.fine_tuning.jobs.resume(job.id)
    client.fine_tuning.jobs.cancel(job.id)
    client.files.delete(train)
    store = Store(f"sqlite:///{server.data_dir / 'rft.db'}")
    try:
        with store.session() as s:
            project_id = s.scalar(select(Project.id).where(Project.name == "audit-a"))
            s.add(Model(id="ft:fuzz-base:audit:1", project_id=project_id, base_model=FAKE_MODEL,
                        path="jobs/none/step-1", created_at=now()))
    finally:
        store.dispose()
    client.models.delete("ft:fuzz-base:audit:1")

    got = all_events(server, "audit-a")
    oldest_first = got[::-1]
    assert [(e["action"], e["object_id"]) for e in oldest_first] == [
        ("key.create", kid),
        ("file.create", train),
        ("job.create", job.id),
        ("job.pause", job.id),
        ("job.resume", job.id),
        ("job.cancel", job.id),
        ("file.delete", train),
        ("model.delete", "ft:fuzz-base:audit:1"),
    ]
    created = oldest_first[0]
    assert (created["actor"], created["key_id"], created["object_type"]) == ("cli", None, "api_key")
    for e in oldest_first[1:]:
        assert (e["object"], e["actor"], e["key_id"]) == ("audit_event", "api_key", kid)
    assert [e["created_at"] for e in oldest_first] == sorted(e["created_at"] for e in oldest_first)
    assert abs(oldest_first[-1]["created_at"] - time.time()) < 120
    by_action = {e["action"]: e for e in got}
    assert by_action["job.create"]["data"]["training_file"] == train
    assert by_action["job.pause"]["data"] == {"status_before": "queued", "status_after": "paused"}
    assert by_action["file.create"]["data"]["filename"] == "train.jsonl"
    # No event carries key material or the request body (the grader).
    raw = json.dumps(got)
    assert server.key("audit-a") not in raw and "string_check" not in raw

    # Filters.
    assert [e["action"] for e in all_events(server, "audit-a", action="job.pause")] == ["job.pause"]
    assert [e["action"] for e in all_events(server, "audit-a", object_id=train)] == ["file.delete", "file.create"]
    assert all_events(server, "audit-a", object_id="file-nope") == []


def test_pages_walk_the_trail_newest_first(server):
    client = server.client("audit-pages")
    for i in range(5):
        upload_rows(client, name=f"{i}.jsonl")
    whole = all_events(server, "audit-pages")
    assert len(whole) == 6  # the key and five files
    seen, after = [], None
    while True:
        body = events(server, "audit-pages", limit=2, **({"after": after} if after else {}))
        assert body["object"] == "list" and len(body["data"]) <= 2
        seen += body["data"]
        if not body["has_more"]:
            break
        after = body["last_id"]
        assert after == body["data"][-1]["id"]
    assert [e["id"] for e in seen] == [e["id"] for e in whole]
    assert [e["data"].get("filename") for e in whole[:5]] == [f"{i}.jsonl" for i in reversed(range(5))]
    assert server.http("audit-pages").get("/v1/audit_events", params={"limit": 0}).status_code == 400


def test_another_project_sees_none_of_its_events(server):
    client_a = server.client("audit-own")
    file_a = upload_rows(client_a)
    a_events = all_events(server, "audit-own")
    b_events = all_events(server, "audit-other")
    assert [e["action"] for e in b_events] == ["key.create"]  # its own key only
    assert not {e["id"] for e in a_events} & {e["id"] for e in b_events}
    assert all_events(server, "audit-other", object_id=file_a) == []
    # Paging after another project's event reads like an unknown id.
    r = server.http("audit-other").get("/v1/audit_events", params={"after": a_events[0]["id"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"
    assert server.http(None).get("/v1/audit_events").status_code == 401


def test_cli_revoke_is_recorded_and_the_key_refused(server):
    plain = keys(server, "create", "--project", "audit-revoke").strip()
    kid = key_id(server, plain)
    keys(server, "revoke", kid)
    r = server.http(None).get("/v1/files", headers={"Authorization": f"Bearer {plain}"})
    assert r.status_code == 401
    got = all_events(server, "audit-revoke", object_id=kid)  # read with a second key
    assert [(e["action"], e["actor"], e["key_id"]) for e in got] == [("key.revoke", "cli", None),
                                                                      ("key.create", "cli", None)]
    assert plain not in json.dumps(got)


def test_an_expired_key_gets_401_and_a_fresh_one_works(server):
    short = keys(server, "create", "--project", "audit-exp", "--expires-in", "1s").strip()
    fresh = keys(server, "create", "--project", "audit-exp", "--expires-in", "30d").strip()
    time.sleep(2.1)  # past the 1 s expiry (rounded up to the next whole second)
    for method, path in (("GET", "/v1/files"), ("POST", "/v1/fine_tuning/jobs"), ("GET", "/v1/audit_events")):
        r = server.http(None).request(method, path, headers={"Authorization": f"Bearer {short}"},
                                      **({"json": {"model": FAKE_MODEL}} if method == "POST" else {}))
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and "expired" in error["message"]
    stale = openai.OpenAI(base_url=server.base_url, api_key=short, max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        stale.files.list()
    ok = openai.OpenAI(base_url=server.base_url, api_key=fresh, max_retries=0)
    upload_rows(ok)
    created = all_events(server, "audit-exp", action="key.create")  # makes a third key, never expiring
    lifetimes = sorted(e["data"]["expires_at"] - e["created_at"] for e in created if e["data"]["expires_at"])
    assert lifetimes[0] <= 2 and 30 * 86400 <= lifetimes[1] <= 30 * 86400 + 2

    listing = {line.split("\t")[2]: line.split("\t") for line in keys(server, "list").splitlines()}
    assert listing[short[:10] + "..."][3] == "expired"
    row = listing[fresh[:10] + "..."]
    assert row[3] == "active" and row[4].startswith("expires 20")
    assert listing[server.key("audit-exp")[:10] + "..."][3:] == ["active", "expires never"]


def test_expiry_options(server, tmp_path):
    assert [parse_duration(t) for t in ("30d", "12h", "90m", "45s")] == [30 * 86400, 12 * 3600, 90 * 60, 45]
    later = keys(server, "create", "--project", "audit-at", "--expires-at", "2999-01-06").strip()
    listing = {line.split("\t")[2]: line for line in keys(server, "list").splitlines()}
    assert "expires 2999-01-06T00:00:00Z" in listing[later[:10] + "..."]
    for bad in (["--expires-in", "3 weeks"], ["--expires-in", "0h"], ["--expires-at", "2001-01-01"],
                ["--expires-at", "soon"], ["--expires-in", "1d", "--expires-at", "2999-01-01"]):
        out = subprocess.run([sys.executable, "-m", "service.cli", "keys", "create", "--project", "audit-at",
                              "--data-dir", str(server.data_dir), *bad], capture_output=True, text=True)
        assert out.returncode == 2 and out.stdout == "", bad
