"""``reward_model``: a local sequence-classification model scores the completion.

Example::

    {"type": "reward_model", "name": "sentiment", "model": "sentiment",
     "input": "{{sample.output_text}}", "label": "POSITIVE", "output": "probability"}

``model`` names a folder the operator configured (``GraderContext.reward_models``:
name -> path of a Hugging Face ``AutoModelForSequenceClassification`` folder); user
specs never name paths and nothing is downloaded. With ``prompt`` set (e.g.
``"{{item.question}}"``) the model reads the pair (prompt, completion), as preference
reward models do. ``label`` picks the output: a label name from the model config's
``id2label`` or an index. ``output``: ``probability`` = softmax probability of that
label (0..1); ``logit`` = the raw logit mapped linearly from ``logit_range`` to 0..1 and
clipped. The 0..1 value is then mapped onto ``range``.

torch is imported inside the grade function only; the API process forwards these
graders to the engine (``graders.needs_engine``).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from graders import templates
from graders.base import GraderContext, GradeResult, SampleError
from graders.names import ModelName

MAX_TOKENS = 512
_lock = threading.Lock()


class RewardModelGrader(BaseModel):
    """Spec of a ``reward_model`` grader."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["reward_model"]
    name: str
    model: ModelName
    input: str = "{{sample.output_text}}"
    prompt: str | None = None
    label: str | int = 0
    output: Literal["probability", "logit"] = "probability"
    logit_range: tuple[float, float] = (-5.0, 5.0)
    range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _check(self) -> RewardModelGrader:
        if not self.range[0] < self.range[1]:
            raise ValueError("range: must be [low, high] with low < high")
        if not self.logit_range[0] < self.logit_range[1]:
            raise ValueError("logit_range: must be [low, high] with low < high")
        return self

    def template_fields(self) -> list[tuple[str, str]]:
        """(field name, template text) pairs, for validation."""
        out = [("input", self.input)]
        if self.prompt is not None:
            out.append(("prompt", self.prompt))
        return out


@functools.lru_cache(maxsize=2)
def _load(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    model.eval()
    return tokenizer, model


def _label_index(spec: RewardModelGrader, model: Any) -> int:
    num = model.config.num_labels
    if isinstance(spec.label, int):
        index = spec.label
    else:
        by_name = {str(name): int(i) for i, name in model.config.id2label.items()}
        if spec.label not in by_name:
            raise SampleError("other_error", f"reward model has no label {spec.label!r}; it has {sorted(by_name)}")
        index = by_name[spec.label]
    if not 0 <= index < num:
        raise SampleError("other_error", f"label index {index} is out of range (the model has {num} labels)")
    return index


def grade(spec: RewardModelGrader, sample: dict[str, Any], item: dict[str, Any], ctx: GraderContext) -> GradeResult:
    """Score the completion with the configured classifier."""
    import torch

    path = ctx.reward_models.get(spec.model)
    if path is None:
        raise SampleError("other_error", f"reward model {spec.model!r} is not configured on this server")
    text = templates.render(spec.input, sample, item)
    prompt = templates.render(spec.prompt, sample, item) if spec.prompt is not None else None
    with _lock:
        tokenizer, model = _load(path)
        index = _label_index(spec, model)
        args = (prompt, text) if prompt is not None else (text,)
        encoded = tokenizer(*args, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits[0].float()
    if spec.output == "probability":
        unit = float(torch.softmax(logits, dim=-1)[index]) if logits.numel() > 1 else float(torch.sigmoid(logits[0]))
    else:
        lo, hi = spec.logit_range
        unit = (float(logits[index]) - lo) / (hi - lo)
    unit = min(max(unit, 0.0), 1.0)
    lo, hi = spec.range
    return GradeResult(reward=lo + unit * (hi - lo))
