"""Jobs API without a worker: creation checks, lifecycle requests, idempotency, ownership."""

from __future__ import annotations

import io
import json

import openai
import pytest

ROWS = [
    {"messages": [{"role": "user", "content": f"Repeat: word{i}"}], "answer": f"word{i}"} for i in range(10)
]
GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def upload(client, rows=ROWS) -> str:
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    return client.files.create(file=("data.jsonl", io.BytesIO(body)), purpose="fine-tune").id


def method(grader=GRADER, **hyper) -> dict:
    return {"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": hyper}}


def with_format(response_format) -> dict:
    body = method()
    body["reinforcement"]["response_format"] = response_format
    return body


AGE_SCHEMA = {"name": "person", "strict": True, "schema": {
    "type": "object", "properties": {"age": {"type": "integer"}, "name": {"type": ["string", "null"]}},
    "required": ["age", "name"], "additionalProperties": False}}


def test_create_keeps_a_supported_response_format(jobs_api_server):
    client = jobs_api_server.client("jobs-format")
    response_format = {"type": "json_schema", "json_schema": AGE_SCHEMA}
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload(client),
                                         method=with_format(response_format))
    stored = client.fine_tuning.jobs.retrieve(job.id).method.reinforcement.response_format
    assert stored == response_format


def test_create_resolves_auto_and_queues(jobs_api_server):
    client = jobs_api_server.client("jobs-a")
    train = upload(client)
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method(n_epochs="auto"), seed=7)
    assert job.status == "queued"
    assert job.seed == 7
    hyper = job.method.reinforcement.hyperparameters
    assert isinstance(hyper.n_epochs, int) and isinstance(hyper.batch_size, int)
    assert client.fine_tuning.jobs.retrieve(job.id).id == job.id
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert any("queued" in m for m in messages)
    assert any("Resolved hyperparameters" in m for m in messages)


def test_lifecycle_of_a_queued_job(jobs_api_server):
    client = jobs_api_server.client("jobs-b")
    train = upload(client)
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method())
    with pytest.raises(openai.ConflictError):
        client.files.delete(train)  # in use by an unfinished job
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.resume(job.id)
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    assert client.files.delete(train).deleted  # the job has finished


def test_idempotency_key_returns_the_same_job(jobs_api_server):
    client = jobs_api_server.client("jobs-c")
    train = upload(client)
    headers = {"Idempotency-Key": "create-once-1"}
    first = client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method(), seed=1, extra_headers=headers)
    again = client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method(), seed=1, extra_headers=headers)
    assert again.id == first.id
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.create(model="tiny", training_file=train, method=method(), seed=2, extra_headers=headers)
    assert [j.id for j in client.fine_tuning.jobs.list()].count(first.id) == 1


def test_other_projects_job_reads_404(jobs_api_server):
    mine = jobs_api_server.client("jobs-owner")
    job = mine.fine_tuning.jobs.create(model="tiny", training_file=upload(mine), method=method())
    theirs = jobs_api_server.client("jobs-stranger")
    for call in (theirs.fine_tuning.jobs.retrieve, theirs.fine_tuning.jobs.cancel, theirs.fine_tuning.jobs.list_events):
        with pytest.raises(openai.NotFoundError):
            call(job.id)
    with pytest.raises(openai.BadRequestError) as err:
        theirs.fine_tuning.jobs.create(model="tiny", training_file=job.training_file, method=method())
    assert err.value.body["param"] == "training_file"


INVALID = [
    pytest.param({"model": "no-such-model"}, "model", id="unknown-model"),
    pytest.param({"training_file": "file-missing"}, "training_file", id="missing-file"),
    pytest.param({"validation_file": "file-missing"}, "validation_file", id="missing-validation-file"),
    pytest.param({"training_file": "SHORT"}, "training_file", id="too-few-rows"),
    pytest.param({"suffix": "bad suffix!"}, "suffix", id="bad-suffix"),
    pytest.param({"seed": -3}, "seed", id="bad-seed"),
    pytest.param({"method": {"type": "distillation"}}, "method.type", id="unknown-method"),
    pytest.param({"method": method({**GRADER, "operation": "approx"})}, "method.reinforcement.grader.operation",
                 id="invalid-grader"),
    pytest.param({"method": method({**GRADER, "reference": "{{item.missing_key}}"})},
                 "method.reinforcement.grader.reference", id="template-variable-not-in-dataset"),
    pytest.param({"method": method(batch_size=0)}, "method.reinforcement.hyperparameters.batch_size",
                 id="batch-size-out-of-range"),
    pytest.param({"method": method(learning_rate_multiplier=-1)},
                 "method.reinforcement.hyperparameters.learning_rate_multiplier", id="negative-lr"),
    pytest.param({"method": method(n_epochs="many")}, "method.reinforcement.hyperparameters.n_epochs",
                 id="epochs-not-a-number"),
    pytest.param({"method": {"type": "reinforcement", "reinforcement": {"grader": GRADER, "algorithm": "ppo2"}}},
                 "method.reinforcement.algorithm", id="unknown-algorithm"),
    pytest.param({"colour": "blue"}, "colour", id="unknown-field"),
    pytest.param({"method": with_format({"type": "xml"})}, "method.reinforcement.response_format.type",
                 id="unknown-response-format-type"),
    pytest.param({"method": with_format({"type": "json_schema", "json_schema": {
        **AGE_SCHEMA, "schema": {**AGE_SCHEMA["schema"], "properties": {"age": {"type": "integer", "minimum": 0}}}}})},
                 "method.reinforcement.response_format.json_schema.schema.properties.age.minimum",
                 id="unenforceable-schema-keyword"),
]


@pytest.mark.parametrize("change, param", INVALID)
def test_invalid_create_names_the_field(jobs_api_server, change, param):
    client = jobs_api_server.client("jobs-invalid")
    body = {"model": "tiny", "training_file": upload(client), "method": method()}
    if change.get("training_file") == "SHORT":
        change = {"training_file": upload(client, ROWS[:2])}
    body.update(change)
    before = len(list(client.fine_tuning.jobs.list()))
    with jobs_api_server.http("jobs-invalid") as http:
        res = http.post("/v1/fine_tuning/jobs", json=body)
    assert res.status_code == 400, res.text
    assert res.json()["error"]["param"] == param
    assert len(list(client.fine_tuning.jobs.list())) == before


def test_code_exec_rows_with_an_unsafe_assert_are_refused_naming_the_line(jobs_api_server):
    # An assert the sandbox cannot check without showing the solution the answer (a
    # comprehension holds the expected values) is refused at creation, with the row.
    client = jobs_api_server.client("jobs-code")
    rows = [dict(r, tests=["assert echo('a') == 'a'"]) for r in ROWS]
    rows[3]["tests"] = ["assert all(echo(w) == w for w in 'ab')"]
    grader = {"type": "code_exec", "name": "tests", "tests": "{{item.tests}}"}
    with pytest.raises(openai.BadRequestError) as exc:
        client.fine_tuning.jobs.create(model="tiny", training_file=upload(client, rows), method=method(grader))
    error = exc.value.body
    assert error["param"] == "method.reinforcement.grader.tests"
    assert "training_file line 4" in error["message"] and "test case 0" in error["message"]
    rows[3]["tests"] = ["assert echo('b') == 'b'"]
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload(client, rows), method=method(grader))
    assert job.status == "queued"
