"""Settings of the inference process: environment variables, overridden by CLI flags."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class InferenceSettings(BaseSettings):
    """What the operator can tune. Environment names are ``RFT_INFERENCE_<FIELD>``,
    except the shared internal token, ``RFT_INTERNAL_TOKEN``."""

    model_config = SettingsConfigDict(env_prefix="RFT_INFERENCE_", extra="forbid")

    internal_token: str = Field(
        min_length=16,
        validation_alias=AliasChoices("RFT_INTERNAL_TOKEN", "internal_token"),
        description="Bearer token the API presents; shared through RFT_INTERNAL_TOKEN.",
    )
    memory_budget_mb: int = Field(
        default=8192, gt=0,
        description="Weights of all loaded models together stay under this; the least "
                    "recently used are unloaded to make room.",
    )
    load_timeout_s: float = Field(
        default=60.0, ge=0,
        description="How long a request waits for its model to load before a 503.",
    )
    max_batch_rows: int = Field(
        default=32, ge=1,
        description="Most sequences (choices of all waiting requests) in one batched generate.",
    )
    torch_threads: int | None = Field(
        default=None, ge=1,
        description="CPU threads torch may use (default: torch's own, one per core). Small "
                    "models on a CPU shared with a trainer run faster with fewer: idle "
                    "OpenMP threads spin against the other processes.",
    )
    backend: Literal["auto", "transformers", "vllm"] = Field(
        default="auto",
        description="auto: vLLM when it is installed and CUDA is present, else transformers.",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.85, gt=0, le=1,
        description="Fraction of GPU memory one vLLM engine may take (weights + KV cache).",
    )
