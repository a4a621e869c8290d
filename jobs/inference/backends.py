"""Choosing the generation backend: vLLM when it is installed and CUDA is present,
transformers ``generate`` with dynamic batching otherwise."""

from __future__ import annotations

import importlib.util
import logging
from typing import Protocol

from .loader import LoadedModel, load_transformers
from .settings import InferenceSettings

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def load(self, path: str) -> LoadedModel:
        """Load a model folder (runs in the loader thread)."""

    def stats(self) -> dict:
        """Backend counters for /healthz."""


class TransformersBackend:
    """transformers ``generate``, with jobs batched by a DynamicBatcher."""

    name = "transformers"

    def __init__(self, settings: InferenceSettings):
        import torch

        from .batcher import DynamicBatcher

        if settings.torch_threads is not None:
            torch.set_num_threads(settings.torch_threads)
        self.batcher = DynamicBatcher(settings.max_batch_rows)

    def load(self, path: str) -> LoadedModel:
        return load_transformers(path, self.batcher.submit)

    def stats(self) -> dict:
        return self.batcher.stats()


def vllm_usable() -> bool:
    """vLLM is importable and a CUDA device is visible."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def select_backend(settings: InferenceSettings) -> Backend:
    """The backend ``settings.backend`` asks for; ``auto`` prefers vLLM when usable.
    Asking for vLLM explicitly where it cannot run is an error, not a quiet downgrade."""
    choice = settings.backend
    if choice == "auto":
        choice = "vllm" if vllm_usable() else "transformers"
    if choice == "vllm":
        if not vllm_usable():
            raise RuntimeError("backend 'vllm' needs the vllm package and a CUDA device")
        from .vllm_backend import VllmBackend

        backend: Backend = VllmBackend(settings)
    else:
        backend = TransformersBackend(settings)
    log.info("inference backend: %s", backend.name)
    return backend
