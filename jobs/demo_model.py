"""Tiny local causal language models: the test model and the demo base model.

Nothing here downloads anything. The tokenizer is character level (every printable
ASCII character plus newline is one token) and is built with the `tokenizers`
library; the model is a small Llama architecture made from a config. The chat
template is ChatML, so prompts look like the ones real instruct models use.

Two public builders:

- ``build_tiny_model(out_dir)``: an untrained model in well under a second, for tests.
- ``build_demo_model(out_dir)``: the demo base model: the same kind of model, larger,
  given a short supervised warm-up on the demo task so that it starts partly competent
  (RL cannot bootstrap from zero success). Cached: a folder holding a ``COMPLETE``
  marker is reused as it is.

CLI (what ``rft demo-model`` runs): ``python -m jobs.demo_model --out DIR``.

Why Llama and not Qwen2: transformers maps the ``qwen2`` model type to its byte-level
Qwen2 tokenizer class and would replace our character-level pre-tokenizer on load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

# Building must never reach the network; set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"

PAD_TOKEN = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
UNK_TOKEN = "<|unk|>"
SPECIAL_TOKENS = [PAD_TOKEN, UNK_TOKEN, IM_START, IM_END]

# ChatML, as Qwen-style instruct models use it. Generation stops at <|im_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Model sizes. The test size trains a step in milliseconds. The demo size (~89k
# parameters, two layers: the least that learns to copy with induction heads) runs a
# GRPO step in under a second on one CPU core; a 0.6M-parameter model took 2-14 s per
# warm-up step on the shared 2-core machine we measured on.
TINY_SIZE = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1)
DEMO_SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4)


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with ChatML special tokens and chat template.

    Each printable ASCII character and newline is one token; anything else maps to
    ``<|unk|>``. Decoding concatenates characters, so text round-trips exactly.
    """
    chars = ["\n"] + [chr(c) for c in range(32, 127)]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # One pre-token per character ("(?m:.)" is Oniguruma's dot-matches-newline), so
    # WordLevel sees single characters.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m:.)"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=IM_END,
        bos_token=None,
        additional_special_tokens=[IM_START],
        padding_side="left",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _make_model(tokenizer: PreTrainedTokenizerFast, size: dict, seed: int):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **size,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        do_sample=False,
    )
    return model


def save_model_folder(model, tokenizer, out_dir: Path) -> None:
    """Save a loadable HF folder (safetensors, config, tokenizer, chat template)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Build an untrained tiny causal LM with tokenizer and chat template into ``out_dir``.

    About 6k parameters (Llama architecture, 2 layers, hidden size 16), character-level
    tokenizer, ChatML chat template, fp32 safetensors. Loads with
    ``AutoModelForCausalLM.from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)``. Deterministic for a given ``seed``.
    Meant for tests: it produces random text, quickly.
    """
    out = Path(out_dir)
    tokenizer = build_char_tokenizer()
    model = _make_model(tokenizer, TINY_SIZE, seed)
    save_model_folder(model, tokenizer, out)
    return out


def build_demo_model(out_dir: str | Path, seed: int = 0, warmup_steps: int | None = None) -> Path:
    """Build (or reuse) the demo base model in ``out_dir``.

    A ~89k-parameter char-level Llama model given a short supervised warm-up
    (``jobs.demo_warmup``, ~90 s on one CPU core) on rows of the demo task generated
    with their own seed, not the train/valid/test rows. Their answers mix two schemas
    (see ``jobs.demo_task``), so the model starts partly competent under the demo
    grader (0.815 greedy reward on the test rows in the README's runs) and the RL job
    has a rule to learn.
    If ``out_dir`` already holds a ``COMPLETE`` marker it is reused as it is. The
    folder is written to a temporary sibling and renamed into place, so a crash never
    leaves a half-built model that looks complete.
    """
    from jobs.demo_warmup import supervised_warmup  # the SFT loop, only needed here

    out = Path(out_dir)
    if (out / COMPLETE_MARKER).exists():
        log.info("demo model already built at %s", out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-model-", dir=out.parent))
    try:
        tokenizer = build_char_tokenizer()
        model = _make_model(tokenizer, DEMO_SIZE, seed)
        supervised_warmup(model, tokenizer, seed=seed, steps=warmup_steps)
        save_model_folder(model, tokenizer, tmp)
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"built_at": time.time()}))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build the demo base model into ``--out`` (or the tiny test model with ``--tiny``)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.demo_model", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--tiny", action="store_true", help="build the untrained test model instead")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.time()
    out = build_tiny_model(args.out, seed=args.seed) if args.tiny else build_demo_model(args.out, seed=args.seed)
    print(f"model ready at {out} ({time.time() - started:.1f}s)")  # noqa: T201 (CLI summary line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
