"""``/v1/fine_tuning/alpha/graders/validate`` and ``/run`` through the official client,
against a real ``rft serve`` on loopback."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from graders.base import ERROR_FLAGS
from tests.loopback import serve
from tests.server import start_server

STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
JSON_MATCH = {
    "type": "json_match",
    "name": "fields",
    "reference": "{{item.reference}}",
    "fields": {"langs": {"mode": "set"}, "city": {"mode": "normalized"}},
}
PYTHON = {
    "type": "python",
    "name": "len",
    "source": "def grade(sample, item):\n    return len(sample['output_text']) / item['n']\n",
}
REWARD_MODEL = {"type": "reward_model", "name": "rm", "model": "sentiment"}


@pytest.fixture(scope="module")
def client(api_server):
    return api_server.client("graders-project")


def test_validate_returns_the_grader(client):
    res = client.fine_tuning.alpha.graders.validate(grader=STRING_CHECK)
    assert res.grader.type == "string_check"
    assert res.grader.operation == "eq"
    assert res.to_dict()["grader"] == STRING_CHECK


INVALID = [
    # id, grader, expected param
    (
        "missing-field",
        {k: v for k, v in STRING_CHECK.items() if k != "operation"},
        "grader.operation",
    ),
    ("bad-operation", {**STRING_CHECK, "operation": "contains"}, "grader.operation"),
    ("unknown-field", {**STRING_CHECK, "colour": "red"}, "grader.colour"),
    ("unknown-type", {"type": "vibes", "name": "x"}, "grader.type"),
    ("bad-template-namespace", {**STRING_CHECK, "input": "{{output_text}}"}, "grader.input"),
    ("unclosed-template", {**STRING_CHECK, "reference": "{{item.answer"}, "grader.reference"),
    ("unknown-sample-variable", {**STRING_CHECK, "input": "{{sample.text}}"}, "grader.input"),
    ("python-syntax", {**PYTHON, "source": "def grade(s, i) return 1"}, "grader.source"),
    (
        "multi-nested-field",
        {
            "type": "multi",
            "name": "m",
            "graders": {"a": {**STRING_CHECK, "operation": "nope"}},
            "calculate_output": "a",
        },
        "grader.graders.a.operation",
    ),
    (
        "multi-formula",
        {"type": "multi", "name": "m", "graders": {"a": STRING_CHECK}, "calculate_output": "a + b"},
        "grader.calculate_output",
    ),
]


@pytest.mark.parametrize(("grader", "param"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_grader_is_400_naming_the_field(client, grader, param):
    for call in (
        lambda: client.fine_tuning.alpha.graders.validate(grader=grader),
        lambda: client.fine_tuning.alpha.graders.run(grader=grader, model_sample="x", item={}),
    ):
        with pytest.raises(openai.BadRequestError) as info:
            call()
        error = info.value.body
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        assert param in error["message"]


def test_run_string_check_has_openai_shape(client):
    res = client.fine_tuning.alpha.graders.run(
        grader=STRING_CHECK, model_sample="Paris", item={"answer": "Paris"}
    )
    assert res.reward == 1.0
    assert res.metadata.name == "exact"
    assert res.metadata.type == "string_check"
    assert res.metadata.execution_time >= 0
    assert res.metadata.token_usage is None
    assert res.sub_rewards == {}
    assert res.api_model_grader_token_usage_per_model == {}
    errors = res.metadata.errors.to_dict()
    for flag in ERROR_FLAGS:
        assert errors[flag] is False, flag
    miss = client.fine_tuning.alpha.graders.run(
        grader=STRING_CHECK, model_sample="Lyon", item={"answer": "Paris"}
    )
    assert miss.reward == 0.0


def test_run_json_match_reports_each_field(client):
    item = {"reference": {"langs": ["python", "c++"], "city": "Los Angeles"}}
    sample = json.dumps({"langs": ["Python"], "city": "los angeles"})
    res = client.fine_tuning.alpha.graders.run(grader=JSON_MATCH, model_sample=sample, item=item)
    assert res.sub_rewards == pytest.approx({"langs": 2 / 3, "city": 1.0})
    assert res.reward == pytest.approx((2 / 3 + 1) / 2)
    bad = client.fine_tuning.alpha.graders.run(
        grader=JSON_MATCH, model_sample="not json", item=item
    )
    assert bad.reward == 0.0
    assert bad.metadata.errors.sample_parse_error is True


def test_run_multi_combines_sub_rewards(client):
    grader = {
        "type": "multi",
        "name": "combo",
        "graders": {
            "exact": STRING_CHECK,
            "fields": {**JSON_MATCH, "reference": {"city": "Paris"}},
        },
        "calculate_output": "0.25 * exact + 0.75 * fields",
    }
    res = client.fine_tuning.alpha.graders.run(
        grader=grader, model_sample='{"city": "PARIS"}', item={"answer": '{"city": "PARIS"}'}
    )
    assert res.sub_rewards == {"exact": 1.0, "fields": 1.0}
    assert res.reward == pytest.approx(1.0)
    assert res.metadata.scores == {"exact": 1.0, "fields": 1.0}


def test_run_python_in_the_sandbox(client):
    res = client.fine_tuning.alpha.graders.run(grader=PYTHON, model_sample="abcd", item={"n": 8})
    assert res.reward == pytest.approx(0.5)
    assert not res.metadata.errors.python_grader_runtime_error
    # The code runs without network and without the service's files: it fails closed.
    probe = {
        **PYTHON,
        "source": "def grade(sample, item):\n    import socket\n    socket.create_connection(('1.1.1.1', 53), 2)\n    return 1.0\n",
    }
    bad = client.fine_tuning.alpha.graders.run(grader=probe, model_sample="x", item={})
    assert bad.reward == 0.0
    assert bad.metadata.errors.python_grader_runtime_error is True
    assert bad.metadata.errors.python_grader_runtime_error_details


def test_run_unknown_item_variable_sets_the_flag(client):
    grader = {**STRING_CHECK, "reference": "{{item.gold}}"}
    res = client.fine_tuning.alpha.graders.run(
        grader=grader, model_sample="Paris", item={"answer": "Paris"}
    )
    assert res.reward == 0.0
    assert res.metadata.errors.invalid_variable_error is True
    assert "gold" in res.to_dict()["metadata"]["error_detail"]


def test_run_without_item_and_with_unicode(client):
    grader = {**STRING_CHECK, "reference": "日本語 ✓"}
    res = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="日本語 ✓")
    assert res.reward == 1.0


def test_bad_bodies_name_the_field(api_server):
    with api_server.http("graders-project") as http:
        r = http.post(
            "/v1/fine_tuning/alpha/graders/run", json={"grader": STRING_CHECK, "model_sample": 3}
        )
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "model_sample"
        r = http.post(
            "/v1/fine_tuning/alpha/graders/run",
            json={"grader": STRING_CHECK, "model_sample": "x", "item": [1]},
        )
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "item"
    with api_server.http(None) as anonymous:
        r = anonymous.post("/v1/fine_tuning/alpha/graders/validate", json={"grader": STRING_CHECK})
        assert r.status_code == 401


def test_engine_grader_without_inference_is_503(api_server, client):
    with pytest.raises(openai.InternalServerError) as info:
        client.fine_tuning.alpha.graders.run(grader=REWARD_MODEL, model_sample="great", item={})
    assert info.value.status_code == 503
    assert info.value.response.headers.get("retry-after")
    assert info.value.body["type"] == "server_error"
    # Validation alone needs no engine.
    # (raw JSON: the openai types know only OpenAI's own grader types)
    raw = client.fine_tuning.alpha.graders.with_raw_response.validate(grader=REWARD_MODEL)
    assert raw.http_response.json()["grader"] == REWARD_MODEL


def _fake_inference(seen: list[dict], token: str) -> FastAPI:
    """Stands in for ``python -m jobs.inference``'s ``/internal/grade``."""
    app = FastAPI()

    @app.post("/internal/grade")
    async def grade(request: Request):
        if request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": {"message": "bad token"}}, status_code=401)
        body = await request.json()
        seen.append(body)
        model = body["grader"].get("model")
        if model == "busy":
            return JSONResponse(
                {"error": {"message": "loading"}}, status_code=503, headers={"Retry-After": "7"}
            )
        if model == "bad":
            return JSONResponse(
                {"error": {"message": "label: nope", "param": "label"}}, status_code=400
            )
        return {
            "reward": 0.75,
            "sub_rewards": {},
            "errors": dict.fromkeys(ERROR_FLAGS, False),
            "error_detail": None,
            "execution_time": 0.01,
            "token_usage": {},
        }

    return app


@pytest.fixture(scope="module")
def forwarding_server(tmp_path_factory):
    seen: list[dict] = []
    token = "test-internal-token"
    with serve(_fake_inference(seen, token)) as url:
        root = tmp_path_factory.mktemp("graders-forward")
        server = start_server(
            root / "data",
            env={
                "RFT_INFERENCE_URL": url,
                "RFT_INTERNAL_TOKEN": token,
                "RFT_REWARD_MODELS": json.dumps(
                    {name: str(root / "no-model") for name in ("sentiment", "busy", "bad")}
                ),
            },
        )
        try:
            yield server, seen
        finally:
            server.stop()


def test_engine_graders_are_forwarded_to_inference(forwarding_server):
    server, seen = forwarding_server
    client = server.client("fwd")
    res = client.fine_tuning.alpha.graders.run(
        grader=REWARD_MODEL, model_sample='{"a": 1}', item={"q": "hi"}
    )
    assert res.reward == 0.75
    assert res.metadata.type == "reward_model"
    body = seen[-1]
    assert body["grader"] == REWARD_MODEL
    assert body["sample"] == {"output_text": '{"a": 1}', "output_json": {"a": 1}}
    assert body["item"] == {"q": "hi"}
    assert body["context"]["reward_models"]["sentiment"] == str(server.data_dir.parent / "no-model")
    # A multi holding an engine grader goes there too.
    multi = {
        "type": "multi",
        "name": "m",
        "graders": {"rm": REWARD_MODEL},
        "calculate_output": "rm",
    }
    client.fine_tuning.alpha.graders.run(grader=multi, model_sample="x")
    assert seen[-1]["grader"]["type"] == "multi"


def test_engine_errors_are_mapped(forwarding_server):
    server, _ = forwarding_server
    client = server.client("fwd")
    with pytest.raises(openai.InternalServerError) as info:
        client.fine_tuning.alpha.graders.run(
            grader={**REWARD_MODEL, "model": "busy"}, model_sample="x"
        )
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.alpha.graders.run(
            grader={**REWARD_MODEL, "model": "bad"}, model_sample="x"
        )
    assert info.value.body["param"] == "grader.label"


def test_healthz_says_whether_user_code_runs(api_server):
    from graders.sandbox import sandbox_status

    with api_server.http(None) as http:
        report = http.get("/healthz").json()["sandbox"]
    ok, reason = sandbox_status()
    assert report["user_code"] == ("sandboxed" if ok else "refused")
    assert report["reason"] == reason
    assert report["memory_cap"]


def test_unconfigured_reward_model_is_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.alpha.graders.run(grader={**REWARD_MODEL, "model": "nobody"}, model_sample="x")
    assert info.value.body["param"] == "grader.model"
