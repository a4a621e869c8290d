"""The job's ``response_format`` applied to TRL's training-time sampling.

TRL (1.16) samples GRPO and RLOO completions in ``_generate_single_turn`` with
``unwrapped_model.generate(**inputs, generation_config=self.generation_config)``, and
offers no way to hand ``generate`` a logits processor: ``GRPOConfig.generation_kwargs``
only feeds the ``GenerationConfig``, which refuses a ``logits_processor`` (transformers
insists it is passed to ``generate`` itself), and the only structured-output option,
``vllm_structured_outputs_regex``, is for vLLM, which rft's trainer does not use. So
the least invasive hook is this mixin: around TRL's own ``_generate_single_turn`` it
gives the unwrapped model (the object TRL's ``unwrap_model_for_generation`` yields,
``accelerator.unwrap_model(model_wrapped)``) an instance-level ``generate`` that adds
our processor, and removes it afterwards. Everything else in TRL's sampling (padding,
EOS masking, FSDP / DeepSpeed gathering) runs as it is.
"""

from __future__ import annotations

from contextlib import contextmanager

from jobs.structured.logits import ConstrainedSampling


@contextmanager
def constrained_generate(model, sampling: ConstrainedSampling):
    """Within the block, ``model.generate`` samples under ``sampling``'s constraint."""
    generate = model.generate

    def constrained(*args, **kwargs):
        return generate(*args, logits_processor=sampling.processors(), **kwargs)

    model.generate = constrained
    try:
        yield model
    finally:
        del model.generate


class ConstrainedGenerationMixin:
    """Mixed into a TRL trainer: when ``rft_sampling`` is set, every training completion
    is sampled under it (see the module docstring for why this hook)."""

    rft_sampling: ConstrainedSampling | None = None

    def _generate_single_turn(self, *args, **kwargs):
        if self.rft_sampling is None:
            return super()._generate_single_turn(*args, **kwargs)
        if self.use_vllm or self.use_transformers_continuous_batching:
            raise RuntimeError("response_format constraints need TRL's transformers generate path")
        model = self.accelerator.unwrap_model(self.model_wrapped)
        with constrained_generate(model, self.rft_sampling):
            return super()._generate_single_turn(*args, **kwargs)
