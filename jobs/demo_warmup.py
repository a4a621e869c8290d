"""Supervised warm-up of the demo base model on the demo task.

RL cannot bootstrap from zero success, so the demo base model first learns the task's
output format and the copy rule by plain next-token training on rows from the demo
generator (``jobs.demo_task``, its own seed: not the train/valid/test rows), whose
answers follow two conventions for the quantity (see ``demo_task``): the model starts
partly competent under the demo grader, and the RL job has something to improve.
"""

from __future__ import annotations

import logging
import random
import time

import torch

from jobs import demo_task

log = logging.getLogger(__name__)

WARMUP_STEPS = 1150
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
IGNORE = -100


def _encode(tokenizer, row: dict, answer: str) -> tuple[list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(row["messages"], tokenize=False, add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Loss on the answer only: the prompt is given, not predicted.
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


def _batch(tokenizer, rows: list[dict], answers: list[str]) -> dict[str, torch.Tensor]:
    encoded = [_encode(tokenizer, r, a) for r, a in zip(rows, answers, strict=True)]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(encoded):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def supervised_warmup(model, tokenizer, seed: int = 0, steps: int | None = None) -> None:
    """Train ``model`` in place for ``steps`` (default ``WARMUP_STEPS``) steps on fresh
    demo rows (CUDA when present)."""
    steps = WARMUP_STEPS if steps is None else steps
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    torch.manual_seed(seed)
    rng = random.Random(demo_task.WARMUP_SEED + seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    started = time.monotonic()
    for step in range(steps):
        rows = [demo_task.make_row(rng) for _ in range(BATCH_SIZE)]
        answers = [demo_task.warmup_answer_text(r, rng) for r in rows]
        batch = {k: v.to(device) for k, v in _batch(tokenizer, rows, answers).items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            log.info("warm-up step %d/%d loss %.3f (%.0fs)", step + 1, steps, loss.item(),
                     time.monotonic() - started)
    model.to("cpu").eval()
