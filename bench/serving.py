"""Serving benchmark: the inference process against raw transformers ``generate``.

    .venv/bin/python bench/serving.py [--model-dir DIR] [--max-tokens 128]

Runs, in one process and on the same model and prompts:
1. raw ``model.generate`` (greedy), one prompt at a time: the baseline tokens/s;
2. the inference process (``python -m jobs.inference``, started here), one request at a
   time, greedy: the served tokens/s and its ratio to the baseline (target >= 0.9x);
3. the inference process under 1, 4 and 16 concurrent requests: total throughput,
   which dynamic batching should raise well above the one-request figure.

Without ``--model-dir`` it builds the demo-sized model (``jobs.demo_model``, no
warm-up: throughput does not depend on what the weights know) in a temporary folder.
Greedy decoding makes the served and raw runs produce the same tokens, so both do the
same work. Requests go to the internal endpoint, so the API hop is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("bench.serving")

QUESTIONS = [
    "What is two plus two?",
    "Name three colours of the rainbow.",
    "Write one sentence about the sea.",
    "Spell the word 'banana' backwards.",
]


class RawBaseline:
    """The model loaded in this process, run with plain greedy ``generate``."""

    def __init__(self, model_dir: Path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.prompts = [self.tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
            for q in QUESTIONS]
        self.round(8)  # warm-up

    def round(self, max_tokens: int) -> tuple[float, list[str]]:
        """Each prompt once, one after another; returns tokens/s and the texts."""
        tokens, texts, t0 = 0, [], time.perf_counter()
        with self._torch.inference_mode():
            for p in self.prompts:
                out = self.model.generate(**p, max_new_tokens=max_tokens, do_sample=False)
                new = out[0, p["input_ids"].shape[1]:]
                tokens += new.shape[0]
                texts.append(self.tok.decode(new, skip_special_tokens=True))
        return tokens / (time.perf_counter() - t0), texts


async def served_round(client, model_dir: Path, max_tokens: int, concurrency: int) -> tuple[float, list[str]]:
    """Total completion tokens/s with ``concurrency`` requests in flight at once (with
    1, each prompt once, one after another, like the baseline)."""
    def body(i: int) -> dict:
        return {"model": "bench", "model_path": str(model_dir), "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}

    t0 = time.perf_counter()
    if concurrency == 1:
        answers = [await client.post("/internal/chat/completions", json=body(i)) for i in range(len(QUESTIONS))]
    else:
        answers = await asyncio.gather(*[client.post("/internal/chat/completions", json=body(i))
                                         for i in range(concurrency)])
    elapsed = time.perf_counter() - t0
    bodies = [a.raise_for_status().json() for a in answers]
    return (sum(b["usage"]["completion_tokens"] for b in bodies) / elapsed,
            [b["choices"][0]["message"]["content"] for b in bodies])


async def measure(model_dir: Path, max_tokens: int, rounds: int, levels: list[int], log_dir: Path,
                  torch_threads: int | None) -> dict:
    """All figures; raw and served single-request rounds alternate, so load from other
    processes on the machine hits both alike."""
    from tests.jobs.inference_proc import start_inference

    raw = RawBaseline(model_dir)
    flags = ["--log-level", "warning"]
    if torch_threads is not None:
        raw._torch.set_num_threads(torch_threads)
        flags += ["--torch-threads", str(torch_threads)]
    proc = start_inference(log_dir, *flags)
    try:
        async with proc.async_client(timeout=600) as client:
            await served_round(client, model_dir, 8, 1)  # load and warm up
            raw_rates, served_rates = [], []
            for _ in range(rounds):
                rate, raw_texts = raw.round(max_tokens)
                raw_rates.append(rate)
                rate, served_texts = await served_round(client, model_dir, max_tokens, 1)
                served_rates.append(rate)
            throughput = {}
            for k in levels:
                throughput[k] = statistics.median(
                    [(await served_round(client, model_dir, max_tokens, k))[0] for _ in range(rounds)])
    finally:
        proc.stop()
    return {"raw": statistics.median(raw_rates), "served": statistics.median(served_rates),
            "same_text": raw_texts == served_texts, "throughput": throughput}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="model folder to serve (default: build the demo-sized model)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="repeats per measurement; the median is reported")
    parser.add_argument("--torch-threads", type=int,
                        help="CPU threads for torch, here and in the server (default: torch's own)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the figures

    with tempfile.TemporaryDirectory(prefix="rft-bench-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from jobs.demo_model import build_demo_model

            model_dir = build_demo_model(Path(tmp) / "model", warmup_steps=0)
        log.info("model: %s, %d new tokens per request, median of %d rounds, torch threads: %s",
                 model_dir, args.max_tokens, args.rounds, args.torch_threads or "default")
        figures = asyncio.run(measure(model_dir, args.max_tokens, args.rounds, args.concurrency, Path(tmp),
                                       args.torch_threads))

    raw, single, throughput = figures["raw"], figures["served"], figures["throughput"]
    log.info("raw transformers generate, 1 request : %8.1f tokens/s", raw)
    log.info("served, 1 request at a time          : %8.1f tokens/s  (ratio %.2fx, target >= 0.90x)",
             single, single / raw)
    log.info("same greedy text as raw generate     : %s", figures["same_text"])
    for k, rate in throughput.items():
        log.info("served, %2d concurrent requests       : %8.1f tokens/s  (%.2fx the 1-request figure)",
                 k, rate, rate / throughput[min(throughput)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
