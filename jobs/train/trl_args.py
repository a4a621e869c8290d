"""Resolved rft hyperparameters -> the TRL config arguments GRPO and RLOO share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from jobs.hyperparams import base_learning_rate


def shared_config_kwargs(hp: dict[str, Any], seed: int, output_dir: Path, n_params: int) -> dict[str, Any]:
    """Arguments common to ``GRPOConfig`` and ``RLOOConfig``.

    One optimizer step per generation batch: each step samples ``num_generations``
    completions for each of ``batch_size`` prompts (TRL's per-device batch counts
    completions, not prompts). Checkpointing, evaluation and stopping are driven by our
    callback, so HF's own save/eval strategies are off and logging is every step.
    """
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir),
        seed=seed,
        data_seed=seed,
        num_train_epochs=hp["n_epochs"],
        per_device_train_batch_size=hp["batch_size"] * hp["num_generations"],
        gradient_accumulation_steps=1,
        num_generations=hp["num_generations"],
        max_completion_length=hp["max_completion_tokens"],
        temperature=hp["temperature"],
        beta=hp["kl_coef"],
        learning_rate=base_learning_rate(n_params, hp["lora"] is not None) * hp["learning_rate_multiplier"],
        # Few dozen rows, tens of steps: a decaying schedule would spend half the job
        # at a fraction of the chosen rate.
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        disable_tqdm=True,
        log_completions=False,
    )
