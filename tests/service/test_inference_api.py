"""Models, chat completions, completions and downloads through the real API
(``rft serve`` with its inference process), driven by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import tarfile
import time

import openai
import pytest
from sqlalchemy import select

from tests.server import start_server

FT_ID = "ft:tiny:test:ftjob-inference"
CKPT_ID = FT_ID + ":ckpt-step-1"
USER = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    """A server with base model ``tiny`` and a fine-tuned model (a checkpoint folder with
    ``adapter/`` and ``trainer_state/`` beside the merged weights) of project "default"."""
    from jobs.store import Checkpoint, Job, Model, Project, Store

    data = tmp_path_factory.mktemp("inference-api") / "data"
    shutil.copytree(tiny_model_dir, data / "models" / "tiny")
    ckpt_rel = "jobs/ftjob-inference/checkpoints/step-1"
    ckpt = data / ckpt_rel
    shutil.copytree(tiny_model_dir, ckpt)
    (ckpt / "adapter").mkdir()
    (ckpt / "adapter" / "adapter_config.json").write_text("{}")
    (ckpt / "trainer_state").mkdir()
    (ckpt / "trainer_state" / "optimizer.pt").write_bytes(b"resume state")
    (ckpt / "COMPLETE").write_text("")

    # One torch thread for the tiny test model: spare OpenMP threads only spin against
    # the other processes on a busy machine.
    server = start_server(data, inference=True, env={"RFT_INFERENCE_TORCH_THREADS": "1"})
    try:
        server.key("default")
        server.key("other")
        store = Store(f"sqlite:///{data / 'rft.db'}")
        with store.session() as s:
            project = s.scalar(select(Project).where(Project.name == "default"))
            s.add(Job(id="ftjob-inference", project_id=project.id, model="tiny", status="succeeded",
                      training_file="file-none", seed=1, method={"type": "reinforcement"},
                      fine_tuned_model=FT_ID))
            s.flush()
            s.add(Model(id=FT_ID, project_id=project.id, job_id="ftjob-inference", base_model="tiny",
                        path=ckpt_rel))
            s.add(Checkpoint(id="ftckpt-inference", job_id="ftjob-inference", project_id=project.id,
                             name="step-1", step=1, metrics={}, path=ckpt_rel, model_name=CKPT_ID))
        store.dispose()
        _wait_for_inference(server.client())
        yield server
    finally:
        server.stop()


def _wait_for_inference(client, timeout: float = 120) -> None:
    """``rft serve`` answers before its inference child does; wait for the child."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.chat.completions.create(model="tiny", messages=USER, max_tokens=1)
            return
        except openai.APIStatusError as exc:
            if exc.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_models_list_retrieve_and_isolation(served):
    client = served.client()
    ids = [m.id for m in client.models.list()]
    assert "tiny" in ids and FT_ID in ids
    assert client.models.retrieve(FT_ID).owned_by != "rft"
    assert client.models.retrieve(CKPT_ID).id == CKPT_ID
    other = served.client("other")
    assert FT_ID not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(FT_ID)
    with pytest.raises(openai.NotFoundError) as err:
        other.chat.completions.create(model=FT_ID, messages=USER)
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("model", ["tiny", FT_ID, CKPT_ID])
def test_chat_streaming_and_not(served, model):
    client = served.client()
    whole = client.chat.completions.create(model=model, messages=USER, max_tokens=16, temperature=0)
    assert whole.model == model
    assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    text = whole.choices[0].message.content
    pieces, usage = [], None
    for chunk in client.chat.completions.create(model=model, messages=USER, max_tokens=16, temperature=0,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert "".join(pieces) == text
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_completions_and_errors(served):
    client = served.client()
    done = client.completions.create(model=FT_ID, prompt="ab", max_tokens=4, n=2, seed=3)
    assert len(done.choices) == 2 and done.usage.prompt_tokens == 2
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 600}])
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=USER)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=USER, temperature=9)
    assert err.value.param == "temperature"


def test_eight_concurrent_chats(served):
    async def run(k: int) -> tuple[float, list]:
        client = openai.AsyncOpenAI(base_url=served.base_url, api_key=served.key(), max_retries=0)
        t0 = time.perf_counter()
        out = await asyncio.gather(*[client.chat.completions.create(
            model="tiny", messages=USER, max_tokens=128, temperature=0) for _ in range(k)])
        await client.close()
        return time.perf_counter() - t0, out

    one, _ = asyncio.run(run(1))
    eight, answers = asyncio.run(run(8))
    assert len(answers) == 8 and all(a.choices[0].message.content is not None for a in answers)
    assert eight < 4 * one, (one, eight)


def test_download_loads_and_answers_like_the_server(served, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with served.http() as http:
        r = http.get(f"/v1/models/{FT_ID}/content")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/x-tar"
        assert hashlib.sha256(r.content).hexdigest() == r.headers["x-content-sha256"]
        ckpt = http.get("/v1/fine_tuning/jobs/ftjob-inference/checkpoints/step-1/content")
        assert hashlib.sha256(ckpt.content).hexdigest() == ckpt.headers["x-content-sha256"]
        again = http.get(f"/v1/models/{FT_ID}/content")  # served from the cache, same bytes
        assert again.headers["x-content-sha256"] == r.headers["x-content-sha256"]
        assert http.get("/v1/fine_tuning/jobs/ftjob-inference/checkpoints/step-9/content").status_code == 404
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    top = names[0].split("/")[0]
    assert f"{top}/adapter/adapter_config.json" in names
    assert not any("trainer_state" in n or n.endswith("/COMPLETE") for n in names)

    folder = tmp_path / top
    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok.apply_chat_template(USER, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    local = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    served_text = served.client().chat.completions.create(
        model=FT_ID, messages=USER, max_tokens=20, temperature=0).choices[0].message.content
    assert served_text == local


def test_delete_fine_tuned_only(served):
    client = served.client()
    with pytest.raises(openai.BadRequestError):
        client.models.delete("tiny")
    assert client.models.delete(FT_ID).deleted
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(FT_ID)
    # The checkpoint stays usable: deleting the model does not delete its job's checkpoints.
    assert client.chat.completions.create(model=CKPT_ID, messages=USER, max_tokens=2).choices


def test_llm_judge_can_name_a_model_this_service_serves(served):
    """A score_model grader naming base model ``tiny`` reaches it through the service's
    own API with the internal token. The untrained tiny model answers gibberish, so the
    grade is a parse error, but not a server error: the call went through."""
    judge = {
        "type": "score_model", "name": "self-judge", "model": "tiny",
        "input": [{"role": "user", "content": "Score this answer: {{sample.output_text}}"}],
        "sampling_params": {"temperature": 0, "max_completions_tokens": 4},
    }
    result = served.client().fine_tuning.alpha.graders.run(grader=judge, model_sample="four", item={})
    errors = result.metadata.errors
    assert errors.model_grader_server_error is False, result.metadata
    assert errors.model_grader_parse_error is True
    assert result.reward == 0
    assert result.model_grader_token_usage_per_model
