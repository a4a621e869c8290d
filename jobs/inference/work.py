"""One request's generation work: its rows (one per choice) and the events they emit.

A backend runs the rows in some thread or task and calls ``emit`` / ``fail``; the HTTP
handler reads ``events()`` on the event loop. The hand-over goes through
``call_soon_threadsafe`` because the transformers backend generates in its own thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RowParams:
    """Everything that decides how one choice is sampled and when it stops."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int  # 0: no top-k cut
    seed: int | None
    stop: tuple[str, ...]
    json_object: bool

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class RowEvent:
    """New text of choice ``index``; ``finish_reason`` is set on its last event."""

    index: int
    text: str
    finish_reason: str | None
    completion_tokens: int


@dataclass(frozen=True)
class JobFailed:
    """Generation broke; ``message`` is for the log, not for the client."""

    message: str


@dataclass
class GenerationJob:
    """The rows of one request, in choice order, and the queue their events go to.
    Create it on the event loop that will read its events. A job that is not
    ``stream``ed gets one event per row, at its end: waking the event loop for every
    token would only take time from generation."""

    rows: list[RowParams]
    stream: bool
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    cancelled: bool = False
    _queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def emit(self, event: RowEvent | JobFailed) -> None:
        """Hand an event to the handler; safe to call from any thread."""
        self.loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def fail(self, message: str) -> None:
        """Report that the whole job failed; safe to call from any thread."""
        self.emit(JobFailed(message))

    async def events(self) -> AsyncIterator[RowEvent | JobFailed]:
        """Events until every row has finished, or until a failure (yielded last)."""
        open_rows = len(self.rows)
        while open_rows:
            event = await self._queue.get()
            yield event
            if isinstance(event, JobFailed):
                return
            if event.finish_reason is not None:
                open_rows -= 1
