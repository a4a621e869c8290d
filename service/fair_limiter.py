"""``FairLimiter``: a capacity limiter shared fairly between keys (projects).

At most ``total`` slots are held at once, at most ``per_key`` by one key. Requests that
must wait are granted round-robin across keys: each free slot goes to the waiting key,
under its own cap, that was granted a slot least recently (a key never granted one, or
one that has since gone idle, comes first). So a key with a hundred queued requests gets
one grant per turn, like a key with one; within a key, requests are served first come,
first served.

Async (anyio); all state is touched from the event loop only, so there are no locks. A
waiter that is cancelled (its client went away) leaves the queue and holds nothing; one
cancelled in the instant after it was granted a slot gives the slot back at once.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import anyio

__all__ = ["FairLimiter"]


class _Waiter:
    __slots__ = ("event", "granted", "key")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.event = anyio.Event()
        self.granted = False


class FairLimiter:
    """``total`` slots, at most ``per_key`` per key, waiters served round-robin by key."""

    def __init__(self, total: int, per_key: int) -> None:
        if total < 1 or per_key < 1:
            raise ValueError(
                f"FairLimiter needs total >= 1 and per_key >= 1, got {total}, {per_key}"
            )
        self.total = total
        self.per_key = per_key
        self._in_use = 0
        self._held: dict[Hashable, int] = {}
        # Keys with waiters, in order of arrival (breaks ties); FIFO per key.
        self._queues: OrderedDict[Hashable, deque[_Waiter]] = OrderedDict()
        # When each busy key (holding or waiting) was last granted a slot.
        self._last_grant: dict[Hashable, int] = {}
        self._grants = 0

    @property
    def in_use(self) -> int:
        """Slots held now, by all keys."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot, of all keys."""
        return sum(len(q) for q in self._queues.values())

    def held_by(self, key: Hashable) -> int:
        """Slots ``key`` holds now."""
        return self._held.get(key, 0)

    def waiting_for(self, key: Hashable) -> int:
        """Requests of ``key`` waiting for a slot now."""
        queue = self._queues.get(key)
        return len(queue) if queue else 0

    @asynccontextmanager
    async def slot(self, key: Hashable) -> AsyncIterator[None]:
        """Hold one of ``key``'s slots for the body of the ``async with``."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    async def acquire(self, key: Hashable) -> None:
        """Wait for a slot for ``key`` (at once when one is free and it is ``key``'s turn).

        Cancellation while waiting leaves nothing held. Pair with ``release(key)``;
        ``slot`` does both.
        """
        waiter = _Waiter(key)
        self._queues.setdefault(key, deque()).append(waiter)
        self._grant()
        if waiter.granted:
            return
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                # Granted, but cancelled before it could resume: hand the slot on.
                self.release(key)
            else:
                queue = self._queues[key]
                queue.remove(waiter)
                if not queue:
                    del self._queues[key]
                    self._forget_if_idle(key)
            raise

    def release(self, key: Hashable) -> None:
        """Give back one of ``key``'s slots and grant it to the next waiter in turn."""
        held = self._held.get(key, 0)
        if held <= 0:
            raise RuntimeError(f"FairLimiter.release({key!r}) without a held slot")
        if held == 1:
            del self._held[key]
            self._forget_if_idle(key)
        else:
            self._held[key] = held - 1
        self._in_use -= 1
        self._grant()

    def _forget_if_idle(self, key: Hashable) -> None:
        # Bounded memory with many keys; an idle key comes back as a newcomer.
        if key not in self._held and key not in self._queues:
            self._last_grant.pop(key, None)

    def _grant(self) -> None:
        while self._in_use < self.total:
            eligible = [k for k in self._queues if self._held.get(k, 0) < self.per_key]
            if not eligible:
                return  # every waiting key is at its own cap
            # min keeps the first of equals: arrival order among never-granted keys.
            key = min(eligible, key=lambda k: self._last_grant.get(k, -1))
            queue = self._queues[key]
            waiter = queue.popleft()
            if not queue:
                del self._queues[key]
            self._held[key] = self._held.get(key, 0) + 1
            self._in_use += 1
            self._grants += 1
            self._last_grant[key] = self._grants
            waiter.granted = True
            waiter.event.set()

    def __repr__(self) -> str:
        return (
            f"<FairLimiter {self._in_use}/{self.total} in use (per key {self.per_key}), "
            f"{self.waiting} waiting>"
        )
