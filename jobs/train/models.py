"""Loading the base model and writing the loadable top level of a checkpoint."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from jobs.train.checkpoints import ADAPTER

log = logging.getLogger(__name__)


def load_base(base_model: str):
    """Model (fp32 weights; TRL autocasts to bf16 on GPUs that support it) and tokenizer.

    The tokenizer must carry a chat template: prompts are rendered through it.
    """
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.chat_template is None:
        raise ValueError(f"base model {base_model} has no chat template; rft renders prompts through it")
    if tokenizer.pad_token is None:
        # Decoder-only models often ship without one; padding is masked out anyway.
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    return model, tokenizer


def count_parameters(model) -> int:
    """All parameters of the model."""
    return sum(p.numel() for p in model.parameters())


def save_top_level(model, tokenizer, folder: Path, is_peft: bool) -> None:
    """Write a plain HF folder into ``folder`` (merged weights for LoRA, plus ``adapter/``).

    For LoRA the adapter is merged into a copy, so the training model keeps its adapter.
    """
    if is_peft:
        model.save_pretrained(folder / ADAPTER)
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(folder, safe_serialization=True)
        del merged
    else:
        model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
