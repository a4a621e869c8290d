"""Fixtures for the input-hardening tests (test_input_limits.py, test_fuzz.py)."""

from __future__ import annotations

import io
import json

import pytest

from tests.server import start_server

# A base model folder is any folder with a config.json: job creation reads only the
# config (to size hyperparameters), so no weights and no torch are needed. This lets
# job bodies pass the model check and reach the deeper checks.
FAKE_MODEL = "fuzz-base"
FAKE_CONFIG = {"model_type": "qwen2", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 64,
               "intermediate_size": 16, "num_attention_heads": 2}
ROWS = [{"messages": [{"role": "user", "content": f"Repeat: w{i}"}], "answer": f"w{i}"} for i in range(10)]


def upload_rows(client, rows=ROWS, name: str = "train.jsonl") -> str:
    """Upload ``rows`` as a JSONL file with the openai client; its id."""
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    return client.files.create(file=(name, io.BytesIO(body)), purpose="fine-tune").id


@pytest.fixture(scope="session")
def hardened_server(tmp_path_factory):
    """``rft serve`` (no worker, no inference) with the fake base model ``fuzz-base``,
    default body caps, and one training file and one queued job in project "default"."""
    data = tmp_path_factory.mktemp("hardened") / "data"
    model = data / "models" / FAKE_MODEL
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(FAKE_CONFIG))
    server = start_server(data)
    try:
        client = server.client()
        server.training_file = upload_rows(client)
        server.job_id = client.fine_tuning.jobs.create(
            model=FAKE_MODEL, training_file=server.training_file,
            method={"type": "reinforcement", "reinforcement": {"grader": {
                "type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"}}},
        ).id
        yield server
    finally:
        server.stop()
