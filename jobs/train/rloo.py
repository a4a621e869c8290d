"""RLOO through TRL's RLOOTrainer (leave-one-out baseline, no value model)."""

from __future__ import annotations

from transformers import PrinterCallback
from trl import RLOOConfig, RLOOTrainer

from jobs.train.constrained import ConstrainedGenerationMixin
from jobs.train.timing import TimedGenerationMixin
from jobs.train.trl_args import shared_config_kwargs


class RftRLOOTrainer(TimedGenerationMixin, ConstrainedGenerationMixin, RLOOTrainer):
    """TRL's RLOOTrainer with generation timing and the job's response_format constraint."""


def build_trainer(*, model, tokenizer, reward_fn, train_dataset, hp, seed, output_dir, n_params,
                  peft_config, callbacks, sampling):
    """A configured ``RftRLOOTrainer`` for one job; ``sampling`` constrains its completions
    (None: unconstrained)."""
    args = RLOOConfig(**shared_config_kwargs(hp, seed, output_dir, n_params))
    trainer = RftRLOOTrainer(model=model, reward_funcs=[reward_fn], args=args, train_dataset=train_dataset,
                             processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    # Metrics go to events.jsonl; HF's printer would duplicate every step on stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.rft_sampling = sampling
    return trainer
