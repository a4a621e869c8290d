"""The vLLM backend: runs only where vllm is installed and CUDA is present."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]


def test_vllm_backend_serves_chat(tmp_path, tiny_model_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA device")
    from tests.jobs.inference_proc import start_inference

    proc = start_inference(tmp_path, "--backend", "vllm", ready_timeout=600)
    try:
        with proc.client(timeout=600) as client:
            assert client.get("/healthz").json()["backend"] == "vllm"
            body = {"model": "tiny", "model_path": str(tiny_model_dir), "max_tokens": 8, "n": 2, "seed": 1,
                    "messages": [{"role": "user", "content": "hi"}]}
            r = client.post("/internal/chat/completions", json=body)
            assert r.status_code == 200, r.text
            assert len(r.json()["choices"]) == 2
            assert r.json()["usage"]["completion_tokens"] > 0
    finally:
        proc.stop()
