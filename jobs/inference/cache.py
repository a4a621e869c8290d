"""ModelCache: models loaded on demand, kept in an LRU under a memory budget.

Loads run one at a time in a loader thread, so the event loop keeps serving models
already loaded. Before a load starts, the cache reserves the folder's weight size and
unloads least-recently-used models until the reservation fits; once loaded, the real
size replaces the estimate. A request waits for its model up to ``load_timeout_s`` and
then gets a 503 with Retry-After while the load goes on in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .errors import ModelLoading, ModelTooLarge
from .loader import LoadedModel, folder_kind, weights_bytes

log = logging.getLogger(__name__)

# Loads of chat-sized models take seconds; a client retrying sooner only adds load.
_RETRY_AFTER_S = 5


class ModelCache:
    """See the module docstring. All methods run on the event loop."""

    def __init__(self, load: Callable[[str], LoadedModel], budget_bytes: int, load_timeout_s: float):
        self._load = load
        self._budget = budget_bytes
        self._timeout = load_timeout_s
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, asyncio.Future] = {}
        self._reserved: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rft-load")

    @property
    def loaded_paths(self) -> list[str]:
        """Loaded folders, least recently used first."""
        return list(self._loaded)

    @property
    def loading_paths(self) -> list[str]:
        return list(self._loading)

    def used_bytes(self) -> int:
        return sum(m.nbytes for m in self._loaded.values()) + sum(self._reserved.values())

    async def get(self, path: str) -> LoadedModel:
        """The model at ``path``, loading it if needed; raises ModelLoading (503) when
        the load takes longer than the timeout, ModelNotFound for a non-model folder."""
        model = self._loaded.get(path)
        if model is not None:
            self._loaded.move_to_end(path)
            return model
        future = self._loading.get(path)
        if future is None:
            future = self._start_load(path)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=self._timeout)
        except TimeoutError:
            raise ModelLoading("the model is still loading; retry in a few seconds",
                               retry_after_s=_RETRY_AFTER_S) from None

    def unload(self, path: str) -> bool:
        """Drop the model at ``path``; False when it was not loaded."""
        model = self._loaded.pop(path, None)
        if model is None:
            return False
        model.close()
        log.info("unloaded %s", path)
        return True

    def _start_load(self, path: str) -> asyncio.Future:
        folder_kind(path)  # ModelNotFound before anything is reserved
        estimate = weights_bytes(path)
        if estimate > self._budget:
            raise ModelTooLarge(
                f"the model's weights take {estimate / 2**20:.0f} MB, more than the inference "
                f"memory budget of {self._budget / 2**20:.0f} MB (RFT_INFERENCE_MEMORY_BUDGET_MB "
                f"or --memory-budget-mb)")
        self._evict_for(estimate)
        self._reserved[path] = estimate
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._load, path)
        self._loading[path] = future
        future.add_done_callback(lambda f: self._finish_load(path, f))
        return future

    def _finish_load(self, path: str, future: asyncio.Future) -> None:
        self._loading.pop(path, None)
        self._reserved.pop(path, None)
        if future.cancelled() or future.exception() is not None:
            if not future.cancelled():
                log.warning("loading %s failed: %s", path, future.exception())
            return
        self._loaded[path] = future.result()
        # The real size may exceed the file-size estimate (dtype, buffers).
        self._evict_for(0, keep=path)

    def _evict_for(self, extra: int, keep: str | None = None) -> None:
        for victim in list(self._loaded):
            if self.used_bytes() + extra <= self._budget:
                return
            if victim != keep:
                log.info("evicting %s to stay under the memory budget", victim)
                self.unload(victim)
