"""GRPO (and its loss variants Dr. GRPO, DAPO, GSPO) through TRL's GRPOTrainer."""

from __future__ import annotations

from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from jobs.train.constrained import ConstrainedGenerationMixin
from jobs.train.timing import TimedGenerationMixin
from jobs.train.trl_args import shared_config_kwargs


class RftGRPOTrainer(TimedGenerationMixin, ConstrainedGenerationMixin, GRPOTrainer):
    """TRL's GRPOTrainer with generation timing and the job's response_format constraint."""


def loss_kwargs(loss_type: str) -> dict:
    """TRL settings for each rft loss type.

    - grpo: per-sequence normalised loss, rewards scaled by the group std.
    - dr_grpo: Dr. GRPO: constant normaliser and no std scaling of rewards.
    - dapo: token-level normalisation and DAPO's asymmetric "clip higher" (0.2 / 0.28).
    - gspo: GSPO: sequence-level importance ratio with the paper's tight clip range.
    """
    if loss_type == "grpo":
        return {"loss_type": "grpo"}
    if loss_type == "dr_grpo":
        return {"loss_type": "dr_grpo", "scale_rewards": "none"}
    if loss_type == "dapo":
        return {"loss_type": "dapo", "epsilon_high": 0.28}
    if loss_type == "gspo":
        return {"loss_type": "grpo", "importance_sampling_level": "sequence",
                "epsilon": 3e-4, "epsilon_high": 4e-4}
    raise ValueError(f"unknown loss_type {loss_type!r}")


def build_trainer(*, model, tokenizer, reward_fn, train_dataset, hp, seed, output_dir, n_params,
                  peft_config, callbacks, sampling):
    """A configured ``RftGRPOTrainer`` for one job; ``sampling`` constrains its completions
    (None: unconstrained)."""
    args = GRPOConfig(**shared_config_kwargs(hp, seed, output_dir, n_params), **loss_kwargs(hp["loss_type"]))
    trainer = RftGRPOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=train_dataset,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    # Metrics go to events.jsonl; HF's printer would duplicate every step on stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.rft_sampling = sampling
    return trainer
