"""The inference process, run for real and driven over HTTP."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from jobs.structured.json_prefix import JsonPrefix
from tests.jobs.inference_proc import start_inference

USER = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # One torch thread: the test model is tiny, and spare threads only spin against
    # whatever else runs on the machine.
    proc = start_inference(tmp_path_factory.mktemp("inference"), "--torch-threads", "1")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(server):
    with server.client() as client:
        yield client


def chat(http, model_dir, **body):
    body.setdefault("messages", USER)
    return http.post("/internal/chat/completions",
                     json={"model": "tiny", "model_path": str(model_dir), **body})


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_is_open_and_the_rest_needs_the_token(server, tiny_model_dir):
    assert httpx.get(f"{server.url}/healthz").json()["backend"] == "transformers"
    r = httpx.post(f"{server.url}/internal/chat/completions",
                   json={"model": "tiny", "model_path": str(tiny_model_dir), "messages": USER},
                   headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_chat_completion_shape_and_usage(http, tiny_model_dir):
    r = chat(http, tiny_model_dir, max_tokens=12, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stream_matches_the_whole_answer(http, tiny_model_dir):
    whole = chat(http, tiny_model_dir, max_tokens=16, temperature=0).json()
    with http.stream("POST", "/internal/chat/completions", json={
            "model": "tiny", "model_path": str(tiny_model_dir), "messages": USER, "max_tokens": 16,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals == [whole["choices"][0]["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_n_choices_and_seed_reproducibility(http, tiny_model_dir):
    first = chat(http, tiny_model_dir, n=3, seed=7, temperature=1.0, max_tokens=12).json()
    again = chat(http, tiny_model_dir, n=3, seed=7, temperature=1.0, max_tokens=12).json()
    other = chat(http, tiny_model_dir, n=3, seed=8, temperature=1.0, max_tokens=12).json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [c["message"]["content"] for c in again["choices"]]
    assert texts != [c["message"]["content"] for c in other["choices"]]
    assert len(set(texts)) > 1  # choice k samples with seed + k
    # Char tokenizer: one token per character, plus the EOS token when one ended the row.
    assert first["usage"]["completion_tokens"] == sum(
        min(12, len(t) + 1) if c["finish_reason"] == "stop" else 12
        for t, c in zip(texts, first["choices"], strict=True))


def test_completions_with_a_list_of_prompts(http, tiny_model_dir):
    r = http.post("/internal/completions", json={
        "model": "tiny", "model_path": str(tiny_model_dir), "prompt": ["ab", "cde"], "n": 2,
        "max_tokens": 5, "temperature": 0})
    body = r.json()
    assert body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    # Greedy: both choices of one prompt agree.
    assert body["choices"][0]["text"] == body["choices"][1]["text"]
    assert body["usage"]["prompt_tokens"] == 5  # char tokenizer: 2 + 3, no BOS


def test_stop_sequence_cuts_the_text(http, tiny_model_dir):
    full = chat(http, tiny_model_dir, max_tokens=24, temperature=0).json()["choices"][0]["message"]["content"]
    assert len(full) >= 8
    stop = full[4:6]
    cut = chat(http, tiny_model_dir, max_tokens=24, temperature=0, stop=[stop]).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["message"]["content"] == full[:full.find(stop)]


def test_max_completion_tokens_ends_with_length(http, tiny_model_dir):
    body = chat(http, tiny_model_dir, max_completion_tokens=3, temperature=1.0, seed=1).json()
    choice = body["choices"][0]
    assert body["usage"]["completion_tokens"] <= 3
    if choice["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 3


def test_json_object_output_stays_json(http, tiny_model_dir):
    for seed in range(3):
        choice = chat(http, tiny_model_dir, max_tokens=40, temperature=1.0, seed=seed,
                      response_format={"type": "json_object"}).json()["choices"][0]
        text = choice["message"]["content"]
        assert text.lstrip().startswith("{")
        assert JsonPrefix().accepts(text) is not None, text
        if choice["finish_reason"] == "stop":
            assert isinstance(json.loads(text), dict)


def test_errors_use_the_openai_envelope(http, tiny_model_dir, tmp_path):
    too_long = chat(http, tiny_model_dir, messages=[{"role": "user", "content": "x" * 600}])
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"
    too_many = chat(http, tiny_model_dir, max_tokens=10_000)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens"
    missing = chat(http, tmp_path / "nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    bad = chat(http, tiny_model_dir, temperature=5)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "temperature"
    unsupported = chat(http, tiny_model_dir, logprobs=True)
    assert unsupported.status_code == 400 and unsupported.json()["error"]["param"] == "logprobs"


def test_unload(http, tiny_model_dir):
    chat(http, tiny_model_dir, max_tokens=1)
    assert http.post("/internal/unload", json={"model_path": str(tiny_model_dir)}).json()["unloaded"]
    assert not http.post("/internal/unload", json={"model_path": str(tiny_model_dir)}).json()["unloaded"]
    assert chat(http, tiny_model_dir, max_tokens=1).status_code == 200


def test_concurrent_requests_are_batched_not_serialised(server, tiny_model_dir):
    body = {"model": "tiny", "model_path": str(tiny_model_dir), "messages": USER,
            "max_tokens": 128, "temperature": 0}

    async def run(k: int) -> tuple[float, list[dict]]:
        async with server.async_client() as client:
            await client.post("/internal/chat/completions", json=body)  # loaded and warm
            t0 = time.perf_counter()
            answers = await asyncio.gather(*[client.post("/internal/chat/completions", json=body)
                                             for _ in range(k)])
            return time.perf_counter() - t0, [a.json() for a in answers]

    def batches() -> int:
        return httpx.get(f"{server.url}/healthz").json()["batches"]

    # The best of two single runs: this machine may be busy with other work.
    one = min(run_time for run_time, _ in (asyncio.run(run(1)), asyncio.run(run(1))))
    before = batches()
    eight, answers = asyncio.run(run(8))
    assert all(len(a["choices"]) == 1 for a in answers)
    assert len({a["choices"][0]["message"]["content"] for a in answers}) == 1
    # 1 warm-up + the 8, which share generate calls: the first may start alone, the
    # rest queue behind it and run together.
    assert batches() - before <= 3
    # Serialised, eight would take ~8x one; batched they share forward passes.
    assert eight < 4 * one, (one, eight)


def test_exported_archive_loads_and_answers_like_the_server(http, tiny_model_dir, tmp_path):
    import hashlib
    import tarfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from jobs.export import archive_for

    archive = archive_for(tiny_model_dir, tmp_path / "exports", "tiny")
    assert hashlib.sha256(archive.path.read_bytes()).hexdigest() == archive.sha256
    with tarfile.open(archive.path) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    folder = tmp_path / "out" / "tiny"
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template(USER, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    local = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    served = chat(http, tiny_model_dir, max_tokens=20, temperature=0).json()["choices"][0]["message"]["content"]
    assert served == local


@pytest.mark.slow
def test_a_model_still_loading_gives_503_with_retry_after(tmp_path, tiny_model_dir):
    proc = start_inference(tmp_path, "--load-timeout-s", "0")
    try:
        with proc.client() as client:
            first = chat(client, tiny_model_dir, max_tokens=1)
            assert first.status_code == 503
            assert first.headers["Retry-After"].isdigit()
            assert first.json()["error"]["code"] == "model_loading"
            deadline = time.monotonic() + 60
            while (r := chat(client, tiny_model_dir, max_tokens=1)).status_code == 503:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert r.status_code == 200
    finally:
        proc.stop()


def test_lora_adapter_folder_is_served_merged(http, tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # Random (not zero) LoRA weights, so the adapter changes the answers.
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    merged = peft_model.merge_and_unload()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok.apply_chat_template(USER, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = merged.generate(**ids, max_new_tokens=16, do_sample=False)
    local = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    served = chat(http, adapter_dir, max_tokens=16, temperature=0).json()["choices"][0]["message"]["content"]
    assert served == local


def test_grade_runs_graders_in_this_process(http):
    grader = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"}
    r = http.post("/internal/grade", json={"grader": grader, "sample": {"output_text": "4"},
                                            "item": {"answer": "4"}, "context": {}})
    assert r.status_code == 200, r.text
    assert r.json()["reward"] == 1.0
    bad = http.post("/internal/grade", json={"grader": {**grader, "operation": "nope"},
                                              "sample": {"output_text": "4"}, "item": {}})
    assert bad.status_code == 400 and bad.json()["error"]["param"]
