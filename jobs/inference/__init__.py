"""The inference process: serves base models, fine-tuned models and checkpoints.

Run as ``python -m jobs.inference --host 127.0.0.1 --port P``. It speaks the internal
HTTP contract in ``docs/internals.md``: the API process resolves a user's model name to a
folder and forwards OpenAI's request body plus ``model_path``; this process loads the
folder on demand (an LRU bounded by a memory budget), renders the prompt with the
model's chat template and generates, batching concurrent requests for the same model.

Modules, one job each:
    settings     InferenceSettings (env vars, CLI flags override)
    errors       the error tree and OpenAI's error envelope
    protocol     request bodies (pydantic)
    prompts      messages / prompt -> token ids, context-length check, RowParams
    loader       a folder (base, fine-tuned, checkpoint, LoRA adapter) -> LoadedModel
    cache        ModelCache: load on demand, wait-or-503, LRU under a memory budget
    work         GenerationJob: the rows of one request and the events they emit
    text         RowText: incremental detokenisation, stop strings, finish reasons
    sampling     RowSampler: per-row temperature / top_p / top_k / seed / JSON mask
                 (the JSON recogniser lives in jobs.structured, shared with training)
    batcher      DynamicBatcher: runs waiting jobs for one model as one generate()
    backends     picks vLLM (installed + CUDA) or transformers
    vllm_backend the vLLM path
    responses    OpenAI response bodies and SSE chunks
    app          create_app(settings): the FastAPI routes
"""
