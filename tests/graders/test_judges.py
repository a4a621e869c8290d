"""score_model and label_model against a real OpenAI-compatible server on loopback.

The server's answer is chosen by the last user message (``MODE:<name>``), so one server
serves every case; it records what it received.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from graders import GraderContext, grade, grade_batch, parse_grader
from graders.base import JudgeEndpoint
from tests.graders.conftest import sample_of
from tests.loopback import serve

ANSWERS = {
    "json": '{"result": 0.8}',
    "json-score-key": '{"score": 0.6, "reason": "ok"}',
    "bare": "0.25",
    "bare-int": "1",
    "fenced": '```json\n{"result": 0.4}\n```',
    "prose-json": 'Sure! Here is my grade: {"result": 0.9} Hope it helps.',
    "above-range": '{"result": 7}',
    "below-range": "-3",
    "string-number": '{"result": "0.5"}',
    "garbage": "I would rather not say.",
    "nan": '{"result": NaN}',
    "bool": '{"result": true}',
    "empty": "",
    "label-polite": '{"result": "polite"}',
    "label-bare": "rude",
    "label-quoted": '"polite"',
    "label-spaces": "  polite \n",
    "label-case": "Polite",
    "label-unknown": '{"result": "neutral"}',
    "label-unicode": '{"result": "höflich"}',
}


class Judge:
    """State of the fake judge: requests seen, failures left, concurrency observed."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_left: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            import asyncio

            body = await request.json()
            with self.lock:
                self.requests.append(body)
                self.headers.append(dict(request.headers))
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                mode = user.split("MODE:", 1)[1].split()[0] if "MODE:" in user else "json"
                if mode.startswith("fail-then-ok"):
                    with self.lock:
                        left = self.fail_left.setdefault(mode, 1)
                        self.fail_left[mode] = left - 1
                    if left > 0:
                        return JSONResponse({"error": {"message": "boom"}}, status_code=500)
                    mode = "json"
                if mode == "always-500":
                    return JSONResponse({"error": {"message": "down"}}, status_code=500)
                if mode == "bad-request":
                    return JSONResponse({"error": {"message": "bad model"}}, status_code=400)
                if mode == "slow":
                    await asyncio.sleep(3)
                    mode = "json"
                if mode == "hold":
                    await asyncio.sleep(0.3)
                    mode = "json"
                if mode == "no-choices":
                    return {"id": "x", "choices": []}
                message: dict = {"role": "assistant", "content": ANSWERS.get(mode, mode)}
                if mode == "refusal":
                    message = {
                        "role": "assistant",
                        "content": None,
                        "refusal": "I can't grade that.",
                    }
                return {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                }
            finally:
                with self.lock:
                    self.in_flight -= 1

        return app


@pytest.fixture(scope="module")
def judge_server():
    judge = Judge()
    with serve(judge.app()) as url:
        yield judge, url


@pytest.fixture
def judge(judge_server):
    return judge_server[0]


@pytest.fixture
def jctx(judge_server) -> GraderContext:
    _, url = judge_server
    return GraderContext(
        judges={
            "judge": JudgeEndpoint(
                base_url=f"{url}/v1", api_key="sk-judge", model="upstream-judge", timeout_s=1.0
            )
        },
        judge_max_retries=2,
    )


def score_spec(**extra) -> dict:
    return {
        "type": "score_model",
        "name": "judge",
        "model": "judge",
        "input": [
            {"role": "system", "content": "Grade the answer against the reference."},
            {
                "role": "user",
                "content": "Reference: {{item.answer}}\nAnswer: {{sample.output_text}}",
            },
        ],
        **extra,
    }


def label_spec(**extra) -> dict:
    return {
        "type": "label_model",
        "name": "tone",
        "model": "judge",
        "input": [{"role": "user", "content": "Is this polite? {{sample.output_text}}"}],
        "labels": ["polite", "rude", "höflich"],
        "passing_labels": ["polite", "höflich"],
        **extra,
    }


SCORES = [
    # id, mode, range, expected reward
    ("json-object", "json", None, 0.8),
    ("json-score-key", "json-score-key", None, 0.6),
    ("bare-number", "bare", None, 0.25),
    ("bare-int", "bare-int", None, 1.0),
    ("code-fence", "fenced", None, 0.4),
    ("json-in-prose", "prose-json", None, 0.9),
    ("clipped-high", "above-range", None, 1.0),
    ("clipped-low", "below-range", None, 0.0),
    ("custom-range", "above-range", [0, 10], 7.0),
    ("numeric-string", "string-number", None, 0.5),
]


@pytest.mark.parametrize(
    ("mode", "rng", "expected"), [c[1:] for c in SCORES], ids=[c[0] for c in SCORES]
)
def test_score_model_parses(mode, rng, expected, jctx):
    spec = parse_grader(score_spec(**({"range": rng} if rng else {})))
    res = grade(spec, sample_of(f"MODE:{mode}"), {"answer": "42"}, jctx)
    assert not res.failed, res.error_detail
    assert res.reward == pytest.approx(expected)
    assert res.token_usage == {
        "judge": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    }


@pytest.mark.parametrize("mode", ["garbage", "nan", "bool", "empty"])
def test_score_model_parse_errors(mode, jctx):
    res = grade(parse_grader(score_spec()), sample_of(f"MODE:{mode}"), {"answer": "42"}, jctx)
    assert res.reward == 0.0
    assert res.errors["model_grader_parse_error"]
    assert res.error_detail


def test_request_carries_key_model_params_and_rendered_messages(judge, jctx):
    spec = parse_grader(
        score_spec(sampling_params={"temperature": 0, "seed": 7, "max_completions_tokens": 20})
    )
    grade(spec, sample_of("MODE:json 日本語"), {"answer": "forty-two"}, jctx)
    body, headers = judge.requests[-1], judge.headers[-1]
    assert headers["authorization"] == "Bearer sk-judge"
    assert body["model"] == "upstream-judge"
    assert body["temperature"] == 0 and body["seed"] == 7 and body["max_tokens"] == 20
    assert body["messages"][1] == {
        "role": "user",
        "content": "Reference: forty-two\nAnswer: MODE:json 日本語",
    }
    assert (
        body["messages"][-1]["role"] == "system" and '"result"' in body["messages"][-1]["content"]
    )


def test_retry_after_a_500(judge, jctx):
    res = grade(
        parse_grader(score_spec()), sample_of("MODE:fail-then-ok-1"), {"answer": "42"}, jctx
    )
    assert res.reward == pytest.approx(0.8)
    modes = [r["messages"][1]["content"] for r in judge.requests]
    assert sum("fail-then-ok-1" in m for m in modes) == 2


def test_server_errors_after_retries(judge, jctx):
    before = len(judge.requests)
    res = grade(parse_grader(score_spec()), sample_of("MODE:always-500"), {"answer": "42"}, jctx)
    assert res.errors["model_grader_server_error"]
    assert "3 attempts" in res.error_detail
    assert len(judge.requests) - before == 3  # 1 + judge_max_retries
    res = grade(parse_grader(score_spec()), sample_of("MODE:bad-request"), {"answer": "42"}, jctx)
    assert res.errors["model_grader_server_error"]
    assert "HTTP 400" in res.error_detail


def test_timeout(jctx):
    ctx = jctx.model_copy(update={"judge_max_retries": 0})
    start = time.perf_counter()
    res = grade(parse_grader(score_spec()), sample_of("MODE:slow"), {"answer": "42"}, ctx)
    assert res.errors["model_grader_server_error"]
    assert "timed out" in res.error_detail
    assert time.perf_counter() - start < 2.5


def test_refusal_and_malformed_answers(jctx):
    res = grade(parse_grader(score_spec()), sample_of("MODE:refusal"), {"answer": "42"}, jctx)
    assert res.errors["model_grader_refusal_error"]
    res = grade(parse_grader(score_spec()), sample_of("MODE:no-choices"), {"answer": "42"}, jctx)
    assert res.errors["model_grader_server_error"]


def test_unknown_judge_without_service_url():
    res = grade(
        parse_grader(score_spec(model="nobody")), sample_of("x"), {"answer": "42"}, GraderContext()
    )
    assert res.errors["model_grader_server_error"]
    assert "nobody" in res.error_detail


def test_served_model_goes_through_the_service_url(judge, judge_server):
    _, url = judge_server
    ctx = GraderContext(service_base_url=f"{url}/v1", internal_key="internal-k")
    res = grade(
        parse_grader(score_spec(model="ft:my-model")), sample_of("MODE:bare"), {"answer": "1"}, ctx
    )
    assert res.reward == 0.25
    assert judge.requests[-1]["model"] == "ft:my-model"
    assert judge.headers[-1]["authorization"] == "Bearer internal-k"


def test_concurrency_limit(judge, jctx):
    ctx = jctx.model_copy(update={"judge_max_concurrency": 2, "batch_concurrency": 8})
    # A request an earlier test gave up on (timeout) may still be held by the server.
    deadline = time.monotonic() + 5
    while judge.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    judge.max_in_flight = 0
    spec = parse_grader(score_spec())
    results = grade_batch(spec, [sample_of("MODE:hold")] * 6, [{"answer": "1"}] * 6, ctx)
    assert [r.reward for r in results] == [0.8] * 6
    assert judge.max_in_flight == 2


LABELS = [
    # id, mode, expected reward (None: parse error)
    ("json-passing", "label-polite", 1.0),
    ("bare-failing", "label-bare", 0.0),
    ("quoted", "label-quoted", 1.0),
    ("whitespace", "label-spaces", 1.0),
    ("case-differs", "label-case", None),
    ("not-a-label", "label-unknown", None),
    ("unicode-label", "label-unicode", 1.0),
    ("garbage", "garbage", None),
    ("empty", "empty", None),
]


@pytest.mark.parametrize(("mode", "expected"), [c[1:] for c in LABELS], ids=[c[0] for c in LABELS])
def test_label_model(mode, expected, jctx):
    res = grade(parse_grader(label_spec()), sample_of(f"MODE:{mode}"), {}, jctx)
    if expected is None:
        assert res.reward == 0.0
        assert res.errors["model_grader_parse_error"]
    else:
        assert not res.failed, res.error_detail
        assert res.reward == expected
        assert res.token_usage["judge"]["total_tokens"] == 14


def test_label_prompt_lists_the_labels(judge, jctx):
    grade(parse_grader(label_spec()), sample_of("MODE:label-polite"), {}, jctx)
    assert '["polite", "rude", "höflich"]' in judge.requests[-1]["messages"][-1]["content"]


INVALID = [
    ("score-range-order", score_spec(range=[1, 0]), "range"),
    ("score-no-input", score_spec(input=[]), "input"),
    ("score-bad-role", score_spec(input=[{"role": "robot", "content": "x"}]), "input.0.role"),
    (
        "score-bad-template",
        score_spec(input=[{"role": "user", "content": "{{answer}}"}]),
        "input.0.content",
    ),
    (
        "score-temperature",
        score_spec(sampling_params={"temperature": 5}),
        "sampling_params.temperature",
    ),
    ("label-passing-unknown", label_spec(passing_labels=["kind"]), "passing_labels"),
    ("label-one-label", label_spec(labels=["polite"], passing_labels=["polite"]), "labels"),
    ("label-duplicate", label_spec(labels=["a", "a"], passing_labels=["a"]), "labels"),
]


@pytest.mark.parametrize(("spec", "param"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_judges(spec, param):
    from graders import GraderError

    with pytest.raises(GraderError) as info:
        parse_grader(spec)
    assert info.value.param == param


def test_key_never_in_spec_or_result(jctx):
    spec = parse_grader(score_spec())
    res = grade(spec, sample_of("MODE:json"), {"answer": "1"}, jctx)
    assert "sk-judge" not in res.model_dump_json() and "sk-judge" not in spec.model_dump_json()
    assert "sk-judge" not in repr(jctx)


def test_parallel_graders_share_nothing(jctx):
    spec = parse_grader(score_spec())
    with ThreadPoolExecutor(4) as pool:
        modes = ["bare", "json", "fenced", "bare-int"] * 3
        rewards = list(
            pool.map(
                lambda m: grade(spec, sample_of(f"MODE:{m}"), {"answer": "1"}, jctx).reward, modes
            )
        )
    assert rewards == [0.25, 0.8, 0.4, 1.0] * 3
