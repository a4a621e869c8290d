"""Dynamic batching for the transformers backend.

Jobs wait in one FIFO. A single generation thread takes the oldest job, every other
waiting job for the same model (up to ``max_rows`` sequences), and runs them as one
left-padded ``generate`` call; jobs that arrive meanwhile wait for the next round. So
concurrent requests share forward passes instead of queueing one behind another, and a
lone request starts at once (no batching delay). One thread, because the device (or the
CPU cores) is the bottleneck: two generate calls at once would only compete for it.

A batch lasts as long as its longest row. Each row's text is sent as it is produced,
and a row that ends early (EOS, stop sequence, its own max_tokens) answers its client
at once; only jobs that arrive during a batch wait for it to end (this is batching per
round, not continuous batching: vLLM is the backend for that).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from .loader import LoadedModel
from .sampling import RowSampler
from .text import RowText
from .work import GenerationJob, RowEvent

log = logging.getLogger(__name__)


class _RowStops(StoppingCriteria):
    """Runs after each generated token: feeds every row's RowText, sends the text that
    became safe, and tells generate which rows are done (EOS, stop string, own token
    cap, or the client went away)."""

    def __init__(self, rows: list[tuple[GenerationJob, int]], texts: list[RowText]):
        self._rows = rows
        self._texts = texts

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        done = []
        for (job, index), text, token in zip(self._rows, self._texts, last, strict=True):
            if not text.done:
                if job.cancelled:
                    text.finish_reason = "cancelled"
                else:
                    delta = text.push(token)
                    if delta or text.done:
                        job.emit(RowEvent(index, delta, text.finish_reason, text.count))
            done.append(text.done)
        return torch.tensor(done, device=input_ids.device)


class DynamicBatcher:
    """Collects jobs per model and runs them in batched ``generate`` calls."""

    def __init__(self, max_rows: int):
        self._max_rows = max_rows
        self._pending: deque[tuple[LoadedModel, GenerationJob]] = deque()
        self._wakeup = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="rft-generate", daemon=True)
        self._thread.start()
        self.batches = 0
        self.rows = 0

    def stats(self) -> dict:
        """How many generate calls ran and how many rows they held (shows batching)."""
        return {"batches": self.batches, "rows": self.rows}

    def submit(self, model: LoadedModel, job: GenerationJob) -> None:
        """Queue ``job`` for ``model``; returns at once."""
        with self._wakeup:
            self._pending.append((model, job))
            self._wakeup.notify()

    def _take_batch(self) -> tuple[LoadedModel, list[GenerationJob]]:
        with self._wakeup:
            while not self._pending:
                self._wakeup.wait()
            model, first = self._pending.popleft()
            jobs, rows = [first], len(first.rows)
            keep: deque = deque()
            while self._pending:
                other_model, job = self._pending.popleft()
                if other_model is model and rows + len(job.rows) <= self._max_rows:
                    jobs.append(job)
                    rows += len(job.rows)
                else:
                    keep.append((other_model, job))
            self._pending = keep
            return model, jobs

    def _loop(self) -> None:
        while True:
            model, jobs = self._take_batch()
            live = [j for j in jobs if not j.cancelled]
            if not live:
                continue
            try:
                self._run(model, live)
            except Exception as exc:  # a failed batch must not kill the thread
                log.exception("generation failed for %s", model.path)
                for job in live:
                    job.fail(f"{type(exc).__name__}: {exc}")

    @torch.inference_mode()
    def _run(self, model: LoadedModel, jobs: list[GenerationJob]) -> None:
        t0 = time.monotonic()
        rows = [(job, i) for job in jobs for i in range(len(job.rows))]
        params = [job.rows[i] for job, i in rows]
        tok = model.tokenizer
        texts = [RowText(tok, p.stop, model.eos_ids, p.max_tokens, incremental=job.stream)
                 for p, (job, _) in zip(params, rows, strict=True)]
        device = model.model.device
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else min(model.eos_ids)

        # Left padding keeps every row's last prompt token in the last column, where
        # generation continues.
        width = max(len(p.prompt_ids) for p in params)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, p in enumerate(params):
            input_ids[r, width - len(p.prompt_ids):] = torch.tensor(p.prompt_ids)
            mask[r, width - len(p.prompt_ids):] = 1

        processors = LogitsProcessorList()
        # All-greedy batches need no processor: generate's own argmax is the choice.
        if any(not p.greedy or p.json_object for p in params):
            json_rows = any(p.json_object for p in params)
            processors.append(RowSampler(
                params, texts,
                model.token_text if json_rows else [],
                model.eos_ids,
                model.special_ids if json_rows else frozenset(),
                device,
            ))
        config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max(p.max_tokens for p in params),
            pad_token_id=pad_id,
            eos_token_id=sorted(model.eos_ids),
        )
        model.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList([_RowStops(rows, texts)]),
        )
        for (job, index), text in zip(rows, texts, strict=True):
            if not text.done:
                # generate stopped on a limit of its own (the model's max length).
                job.emit(RowEvent(index, text.finish_length(), text.finish_reason, text.count))
            elif text.finish_reason == "cancelled":
                job.emit(RowEvent(index, "", "cancelled", text.count))
        self.batches += 1
        self.rows += len(rows)
        log.debug("batch of %d rows (%d jobs) for %s in %.2fs", len(rows), len(jobs),
                  model.path, time.monotonic() - t0)
