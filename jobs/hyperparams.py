"""Hyperparameter resolution for reinforcement jobs (torch-free: the API imports it).

``resolve_hyperparameters`` turns the user's ``method.reinforcement.hyperparameters``
(any value may be ``"auto"`` or absent) into a dict with every value concrete, which
the API records on the job and the worker writes into ``spec.json``. The rules for
``"auto"`` are in its docstring; ranges are checked here so that a bad value is a 400
naming the field, never a trainer crash.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PARAM_PREFIX = "method.reinforcement.hyperparameters"

ALGORITHMS = ("grpo", "rloo")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "gspo")
REASONING_EFFORTS = ("low", "medium", "high")

# Defaults the auto rules start from (see resolve_hyperparameters).
TARGET_PROMPT_VISITS = 320
DEFAULT_NUM_GENERATIONS = 8
DEFAULT_MAX_COMPLETION_TOKENS = 256
DEFAULT_KL_COEF = 0.04
DEFAULT_LORA_RANK = 16

# Upper bounds: generous, they only catch typos and runaway costs.
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 1024
MAX_GENERATIONS = 256
MAX_COMPLETION_TOKENS = 32768
MAX_WALL_SECONDS = 30 * 24 * 3600

KNOWN = (
    "n_epochs", "batch_size", "learning_rate_multiplier", "eval_interval", "eval_samples",
    "compute_multiplier", "reasoning_effort", "num_generations", "kl_coef",
    "max_completion_tokens", "temperature", "loss_type", "lora", "max_wall_seconds",
)


class HyperparameterError(ValueError):
    """A hyperparameter is invalid; ``param`` is its full dotted path in the request body."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:
        return f"{self.message} (param: {self.param})"


def _err(name: str, message: str) -> HyperparameterError:
    return HyperparameterError(message, f"{PARAM_PREFIX}.{name}")


def _is_auto(value: Any) -> bool:
    return value is None or value == "auto"


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    # bool is an int subclass in Python; `true` for a batch size is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _err(name, f"{name} must be an integer or 'auto', got {value!r}")
    if not lo <= value <= hi:
        raise _err(name, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _float(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _err(name, f"{name} must be a number or 'auto', got {value!r}")
    value = float(value)
    too_low = value <= lo if lo_open else value < lo
    if too_low or value > hi:
        bracket = "(" if lo_open else "["
        raise _err(name, f"{name} must be in {bracket}{lo}, {hi}], got {value}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _err(name, f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _lora(value: Any) -> dict | None:
    if _is_auto(value):
        return None
    if not isinstance(value, dict):
        raise _err("lora", "lora must be null or an object {rank, alpha, target_modules}")
    unknown = sorted(set(value) - {"rank", "alpha", "target_modules"})
    if unknown:
        raise _err(f"lora.{unknown[0]}", f"unknown lora field {unknown[0]!r}; allowed: rank, alpha, target_modules")
    rank = value.get("rank", "auto")
    rank = DEFAULT_LORA_RANK if _is_auto(rank) else _int("lora.rank", rank, 1, 1024)
    alpha = value.get("alpha", "auto")
    alpha = float(2 * rank) if _is_auto(alpha) else _float("lora.alpha", alpha, 0.0, 1e6, lo_open=True)
    targets = value.get("target_modules", "auto")
    if _is_auto(targets) or targets == "all-linear":
        targets = "all-linear"
    elif not (isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
        raise _err("lora.target_modules",
                   "lora.target_modules must be 'all-linear' or a non-empty list of module names")
    return {"rank": rank, "alpha": alpha, "target_modules": targets}


def resolve_hyperparameters(
    method_type: str,
    algorithm: str,
    requested: dict | None,
    n_train_rows: int,
    n_params: int | None,
) -> dict:
    """Validate ``requested`` and resolve every ``"auto"`` (or missing) value.

    ``method_type`` must be ``"reinforcement"``; ``algorithm`` is ``grpo`` or ``rloo``.
    Rules for ``"auto"``, applied in this order:

    - ``batch_size`` (prompts per optimizer step) = clamp(n_train_rows // 8, 1, 8).
    - ``n_epochs`` = clamp(ceil(320 / n_train_rows), 1, 50): about 320 prompt visits,
      i.e. ~10 epochs over a few dozen rows.
    - ``learning_rate_multiplier`` = 1.0. The trainer's base learning rate is
      ``base_learning_rate(n_params, lora)`` (see there).
    - ``compute_multiplier`` = 1.0; it scales the number of samples per prompt.
    - ``num_generations`` (completions sampled per prompt) =
      max(2, round(b * compute_multiplier)) where b is the requested
      ``num_generations`` or 8 when that is auto.
    - ``eval_interval`` (steps between evals and checkpoints) = max(1, total_steps // 10)
      where total_steps = ceil(n_train_rows / batch_size) * n_epochs.
    - ``eval_samples`` = null: the whole validation file. An integer grades the first
      that many validation rows.
    - ``kl_coef`` = 0.04 (TRL's beta: a KL penalty to the initial policy, which keeps a
      few-dozen-row job from drifting into memorising the training rows).
    - ``max_completion_tokens`` = 256; ``temperature`` = 1.0 (sampling during training).
    - ``loss_type`` = ``dapo`` for grpo (TRL's default); must stay auto for rloo, which
      has one loss (resolved to null).
    - ``reasoning_effort`` = ``medium``; accepted and recorded, the trainer ignores it.
    - ``lora`` = null (full fine-tuning). An object gets ``rank`` 16, ``alpha`` 2*rank and
      ``target_modules`` ``"all-linear"`` for its missing fields.
    - ``max_wall_seconds`` = null (no limit). When set, training stops gracefully at that
      wall time and the job succeeds with the best checkpoint so far.

    ``n_params`` is accepted for rules that depend on model size; today only the learning
    rate does, and the trainer computes that from the exact count.
    Raises ``HyperparameterError`` (a ``ValueError``) naming the field.
    """
    if method_type != "reinforcement":
        raise HyperparameterError(f"method type {method_type!r} is not supported; use 'reinforcement'",
                                  "method.type")
    if algorithm not in ALGORITHMS:
        raise HyperparameterError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}",
                                  "method.reinforcement.algorithm")
    if n_train_rows < 1:
        raise HyperparameterError("the training file has no rows", "training_file")
    if not isinstance(requested or {}, dict):
        raise HyperparameterError("hyperparameters must be an object", PARAM_PREFIX)
    req = dict(requested or {})
    for key in req:
        if key not in KNOWN:
            raise _err(key, f"unknown hyperparameter {key!r}; known: {', '.join(KNOWN)}")

    def get(name: str) -> Any:
        return req.get(name, "auto")

    out: dict[str, Any] = {}
    v = get("batch_size")
    out["batch_size"] = min(max(n_train_rows // 8, 1), 8) if _is_auto(v) else _int("batch_size", v, 1, MAX_BATCH_SIZE)
    if out["batch_size"] > n_train_rows:
        raise _err("batch_size", f"batch_size {out['batch_size']} is larger than the training file "
                   f"({n_train_rows} rows)")
    v = get("n_epochs")
    out["n_epochs"] = (min(max(math.ceil(TARGET_PROMPT_VISITS / n_train_rows), 1), 50)
                       if _is_auto(v) else _int("n_epochs", v, 1, MAX_EPOCHS))
    v = get("learning_rate_multiplier")
    out["learning_rate_multiplier"] = 1.0 if _is_auto(v) else _float(
        "learning_rate_multiplier", v, 0.0, 1000.0, lo_open=True)
    v = get("compute_multiplier")
    out["compute_multiplier"] = 1.0 if _is_auto(v) else _float("compute_multiplier", v, 0.0, 64.0, lo_open=True)
    v = get("num_generations")
    base = DEFAULT_NUM_GENERATIONS if _is_auto(v) else _int("num_generations", v, 2, MAX_GENERATIONS)
    out["num_generations"] = max(2, round(base * out["compute_multiplier"]))
    if out["num_generations"] > MAX_GENERATIONS:
        raise _err("compute_multiplier", f"num_generations * compute_multiplier must be at most {MAX_GENERATIONS}")
    steps = math.ceil(n_train_rows / out["batch_size"]) * out["n_epochs"]
    v = get("eval_interval")
    out["eval_interval"] = max(1, steps // 10) if _is_auto(v) else _int("eval_interval", v, 1, 10**7)
    v = get("eval_samples")
    out["eval_samples"] = None if _is_auto(v) else _int("eval_samples", v, 1, 10**7)
    v = get("kl_coef")
    out["kl_coef"] = DEFAULT_KL_COEF if _is_auto(v) else _float("kl_coef", v, 0.0, 100.0)
    v = get("max_completion_tokens")
    out["max_completion_tokens"] = (DEFAULT_MAX_COMPLETION_TOKENS if _is_auto(v)
                                    else _int("max_completion_tokens", v, 1, MAX_COMPLETION_TOKENS))
    v = get("temperature")
    out["temperature"] = 1.0 if _is_auto(v) else _float("temperature", v, 0.0, 2.0, lo_open=True)
    v = get("loss_type")
    if algorithm == "rloo":
        if not _is_auto(v):
            raise _err("loss_type", "loss_type applies to grpo only; leave it 'auto' for rloo")
        out["loss_type"] = None
    else:
        out["loss_type"] = "dapo" if _is_auto(v) else _choice("loss_type", v, LOSS_TYPES)
    v = get("reasoning_effort")
    out["reasoning_effort"] = "medium" if _is_auto(v) else _choice("reasoning_effort", v, REASONING_EFFORTS)
    out["lora"] = _lora(req.get("lora"))
    v = get("max_wall_seconds")
    out["max_wall_seconds"] = None if _is_auto(v) else _float("max_wall_seconds", v, 0.0, MAX_WALL_SECONDS,
                                                              lo_open=True)
    return out


def total_steps(hp: dict, n_train_rows: int) -> int:
    """Optimizer steps a job with resolved ``hp`` runs over ``n_train_rows`` rows."""
    return math.ceil(n_train_rows / hp["batch_size"]) * hp["n_epochs"]


def base_learning_rate(n_params: int, lora: bool) -> float:
    """The learning rate that ``learning_rate_multiplier`` multiplies.

    Full fine-tuning: 1e-6 for models of 1B parameters or more (TRL's GRPO default),
    growing as 1/sqrt(size) below that and capped at 3e-5 (tiny models need larger
    steps). LoRA: 10x that, as TRL's "LoRA without regret" guide recommends.
    """
    lr = min(1e-6 * math.sqrt(max(1e9 / max(n_params, 1), 1.0)), 3e-5)
    return lr * 10 if lora else lr


def count_parameters_from_config(model_dir: str | Path) -> int | None:
    """Approximate parameter count of a decoder-only model from its ``config.json``.

    Counts embeddings (twice unless tied), attention (with grouped KV heads) and a
    gated MLP per layer; ignores norms and biases (well under 1%). Returns None when
    the folder has no config.json or the config lacks the usual fields (e.g. a hub id
    or an unusual architecture).
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    cfg = cfg.get("text_config", cfg)
    try:
        h = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
        inter = int(cfg["intermediate_size"])
        heads = int(cfg["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    attn = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2
    mlp = 3 * h * inter
    emb = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return emb + layers * (attn + mlp)
