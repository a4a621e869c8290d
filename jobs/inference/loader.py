"""Loading a model folder: a base model, a fine-tuned model, a checkpoint's top level,
or a LoRA adapter folder (merged into its base at load time)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .errors import ModelNotFound
from .work import GenerationJob

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class GenerationDefaults:
    """Sampling values used when a request leaves them out (the model's
    generation_config when it asks for sampling, else OpenAI's defaults)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass(eq=False)
class LoadedModel:
    """A model ready to generate, whatever the backend.

    ``submit(model, job)`` hands a job to the backend and returns at once; ``close``
    frees the backend's resources when the cache unloads the model.
    """

    path: str
    tokenizer: object
    context_length: int
    eos_ids: frozenset[int]
    vocab_size: int
    nbytes: int
    defaults: GenerationDefaults
    submit: Callable[[LoadedModel, GenerationJob], None]
    close: Callable[[], None]
    model: object = None  # the torch module (transformers backend only)

    def start(self, job: GenerationJob) -> None:
        """Start generating ``job``'s rows; events arrive on ``job.events()``."""
        self.submit(self, job)

    @cached_property
    def token_text(self) -> list[str]:
        """Text of each token id on its own, for the JSON constraint. Ids past the
        tokenizer (padded embedding rows) map to an empty string, which is never allowed."""
        size = len(self.tokenizer)
        return [self.tokenizer.decode([i]) if i < size else "" for i in range(self.vocab_size)]

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids the JSON constraint must not pick: special tokens and empty-text tokens."""
        empty = {i for i, t in enumerate(self.token_text) if t == ""}
        return frozenset(self.tokenizer.all_special_ids) | empty


def folder_kind(path: str) -> str:
    """``"model"`` for a Hugging Face model folder, ``"adapter"`` for a LoRA adapter
    folder; raises ModelNotFound for anything else."""
    p = Path(path)
    if not p.is_dir():
        raise ModelNotFound(f"no model folder at {path}", param="model")
    if (p / "config.json").is_file():
        return "model"
    if (p / "adapter_config.json").is_file():
        return "adapter"
    raise ModelNotFound(f"{path} holds neither config.json nor adapter_config.json", param="model")


def weights_bytes(path: str) -> int:
    """Size of the weight files of a folder (and of a LoRA adapter's base when it is a
    local folder): the estimate the cache reserves before loading."""
    p = Path(path)
    total = sum(f.stat().st_size for f in p.iterdir() if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))
    if folder_kind(path) == "adapter":
        base = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
        if Path(base).is_dir():
            total += weights_bytes(base)
    return total


def load_transformers(path: str, submit: Callable[[LoadedModel, GenerationJob], None]) -> LoadedModel:
    """Load a folder with transformers, on CUDA when present; ``submit`` is the
    batcher's entry point, where the model's jobs go."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Half precision on CPU is slow and some kernels lack it: compute in float32 there.
    dtype = "auto" if device == "cuda" else torch.float32
    kind = folder_kind(path)
    if kind == "adapter":
        from peft import PeftModel

        base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
        # Merging once at load time makes each step as fast as a plain model's.
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
        tok_source = path if (Path(path) / "tokenizer_config.json").is_file() else base
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok_source = path
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(tok_source)

    gen = model.generation_config
    eos = gen.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    if not eos_ids:
        raise ModelNotFound(f"{path}: neither generation_config nor tokenizer names an EOS token",
                            param="model")
    defaults = GenerationDefaults()
    if gen.do_sample:
        defaults = GenerationDefaults(
            temperature=gen.temperature if gen.temperature is not None else 1.0,
            top_p=gen.top_p if gen.top_p is not None else 1.0,
            top_k=gen.top_k or 0,
        )
    nbytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    loaded = LoadedModel(
        path=path, tokenizer=tokenizer, context_length=model.config.max_position_embeddings,
        eos_ids=frozenset(eos_ids), vocab_size=model.config.vocab_size, nbytes=nbytes,
        # Dropping the last reference frees the weights; a batch still running keeps
        # its own reference until it ends.
        defaults=defaults, submit=submit, close=lambda: None, model=model,
    )
    log.info("loaded %s (%s, %.1f MB, %s) in %.1fs", path, kind, nbytes / 2**20, device,
             time.monotonic() - t0)
    return loaded
