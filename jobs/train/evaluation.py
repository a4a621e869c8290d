"""Greedy evaluation: generate one answer per row, grade it, average the rewards."""

from __future__ import annotations

import math
from typing import Any

import torch

from jobs.structured.logits import ConstrainedSampling
from jobs.train.data import render_prompts

EVAL_BATCH_SIZE = 32


@torch.no_grad()
def greedy_completions(model, tokenizer, rows: list[dict[str, Any]], max_new_tokens: int,
                       on_batch=None, sampling: ConstrainedSampling | None = None) -> list[str]:
    """Greedy answers to each row's prompt, decoded without special tokens.

    ``on_batch`` is called before each batch (the trainer passes its cancel check, so a
    long evaluation still stops within seconds). ``sampling`` is the job's
    response_format constraint, the same one training samples under: greedy decoding
    then takes the most likely allowed token.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompts = render_prompts(tokenizer, rows)
    texts: list[str] = []
    try:
        for start in range(0, len(prompts), EVAL_BATCH_SIZE):
            if on_batch is not None:
                on_batch()
            batch = tokenizer(prompts[start:start + EVAL_BATCH_SIZE], return_tensors="pt", padding=True,
                              padding_side="left", add_special_tokens=False).to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                 logits_processor=sampling.processors() if sampling is not None else None)
            new = out[:, batch["input_ids"].shape[1]:]
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return texts


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    """Sample mean and its standard error (0 for fewer than two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def evaluate_rows(model, tokenizer, reward_fn, rows: list[dict[str, Any]], max_new_tokens: int,
                  on_batch=None, sampling: ConstrainedSampling | None = None) -> dict[str, float]:
    """Greedy reward over ``rows`` graded by ``reward_fn.grade_texts``: mean, stderr, count.

    Pass a ``GraderReward`` kept for evaluation, not the training one, so evaluation
    does not leak into the step's training statistics.
    """
    texts = greedy_completions(model, tokenizer, rows, max_new_tokens, on_batch, sampling)
    results = reward_fn.grade_texts(texts, rows)
    mean, stderr = mean_and_stderr([r.reward for r in results])
    return {"reward_mean": mean, "reward_stderr": stderr, "n": len(rows)}
