"""The vLLM backend, used when vLLM is installed and CUDA is present.

vLLM schedules and batches requests itself (continuous batching, paged KV cache), so
this path only translates: each row becomes one vLLM request (one seed per choice, as
on the transformers path) over the same prompt token ids, and vLLM's output deltas
become RowEvents. An engine pre-allocates its share of GPU memory, so the cache keeps
one engine at a time: a model's size is counted as the whole budget.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from .errors import InvalidRequest
from .loader import GenerationDefaults, LoadedModel, folder_kind
from .settings import InferenceSettings
from .work import GenerationJob, RowEvent, RowParams

log = logging.getLogger(__name__)


class VllmBackend:
    """Loads folders into vLLM ``AsyncLLMEngine``s and runs jobs on them."""

    name = "vllm"

    def __init__(self, settings: InferenceSettings):
        self._settings = settings

    def stats(self) -> dict:
        # vLLM schedules inside its engine; it keeps its own metrics.
        return {}

    def load(self, path: str) -> LoadedModel:
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        if folder_kind(path) == "adapter":
            raise InvalidRequest("the vLLM backend serves model folders; serve the checkpoint's "
                                 "merged top level rather than its adapter/ folder", param="model")
        engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(
            model=path, gpu_memory_utilization=self._settings.vllm_gpu_memory_utilization))
        tokenizer = AutoTokenizer.from_pretrained(path)
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        return LoadedModel(
            path=path, tokenizer=tokenizer, context_length=engine.model_config.max_model_len,
            eos_ids=frozenset(eos), vocab_size=len(tokenizer),
            nbytes=self._settings.memory_budget_mb * 2**20,
            # vLLM applies the model's generation_config itself; ours only fills what
            # the request leaves out, with OpenAI's defaults.
            defaults=GenerationDefaults(), submit=lambda model, job: _submit(engine, job),
            close=engine.shutdown,
        )


def _submit(engine, job: GenerationJob) -> None:
    for index, row in enumerate(job.rows):
        job.loop.create_task(_run_row(engine, job, index, row))


async def _run_row(engine, job: GenerationJob, index: int, row: RowParams) -> None:
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    params = SamplingParams(
        n=1, temperature=row.temperature, top_p=row.top_p, top_k=row.top_k or -1,
        seed=row.seed, max_tokens=row.max_tokens, stop=list(row.stop) or None,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=StructuredOutputsParams(json_object=True) if row.json_object else None,
    )
    request_id = uuid.uuid4().hex
    count = 0
    try:
        async for out in engine.generate(TokensPrompt(prompt_token_ids=list(row.prompt_ids)),
                                         params, request_id):
            if job.cancelled:
                await engine.abort(request_id)
                return
            piece = out.outputs[0]
            count += len(piece.token_ids)
            reason = piece.finish_reason if out.finished else None
            job.emit(RowEvent(index, piece.text, "cancelled" if reason == "abort" else reason, count))
    except asyncio.CancelledError:
        await engine.abort(request_id)
        raise
    except Exception as exc:
        log.exception("vLLM generation failed")
        job.fail(f"{type(exc).__name__}: {exc}")
