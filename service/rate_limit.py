"""Requests per second per API key: one token bucket per key, in this process.

Each key's bucket holds up to ``burst`` tokens and refills at ``per_second``; a request
takes one token, and a request that finds less than one is refused (429) without taking
any, so a client that keeps knocking while limited still gets ``per_second`` through.
``service.guards.RequestGuard`` calls ``take`` right after the key is checked and before
any body byte is read, and every answer to an authenticated request carries OpenAI's
``x-ratelimit-*-requests`` headers.

Per process: each API process keeps its own buckets, so behind N API processes (or
nodes) a key's effective limit is N times the setting.

Cost: O(1) per request, no locks. All state is touched from the event loop only (the
guard calls ``take`` there), and each request touches only its own key's bucket plus the
idle ones it drops. Memory is bounded: a bucket untouched for ``burst / per_second``
seconds has refilled, so it equals a fresh one and is dropped (the buckets are kept in
order of last use, so the idle ones are always at the front). What is left is at most
one bucket per key seen in the last refill time.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import Message, Scope

__all__ = ["RATE_STATE", "RateLimiter", "RateState", "with_rate_headers"]

# Where RequestGuard leaves the RateState of the request's key, in the request state.
RATE_STATE = "rft_rate"


def go_duration(seconds: float) -> str:
    """A duration the way OpenAI writes ``x-ratelimit-reset-requests``: ``20ms``,
    ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


@dataclass(frozen=True, slots=True)
class RateState:
    """One key's bucket as a request left it."""

    allowed: bool
    limit: int  # the bucket's size: requests a full bucket lets through at once
    remaining: int  # whole tokens left
    reset_seconds: float  # until the bucket is full again
    retry_after_seconds: float  # until one token is there (0 when there is one)
    per_second: float

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's request rate headers, raw."""
        return [
            (b"x-ratelimit-limit-requests", str(self.limit).encode()),
            (b"x-ratelimit-remaining-requests", str(self.remaining).encode()),
            (b"x-ratelimit-reset-requests", go_duration(self.reset_seconds).encode()),
        ]

    @property
    def retry_after(self) -> str:
        """``Retry-After``: whole seconds, rounded up (at least 1)."""
        return str(max(1, math.ceil(self.retry_after_seconds)))


class RateLimiter:
    """A token bucket per key: ``burst`` at once, ``per_second`` sustained."""

    def __init__(self, per_second: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError(f"RateLimiter needs per_second > 0 and burst >= 1, got {per_second}, {burst}")
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._refill_seconds = burst / per_second
        # key -> [tokens, when they were counted], least recently used first.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> RateState:
        """Take a token from ``key``'s bucket (an API key's id) when it has one; the
        bucket's state after."""
        now = self._clock()
        self._drop_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            tokens = float(self.burst)
            bucket = self._buckets[key] = [tokens, now]
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.per_second)
            self._buckets.move_to_end(key)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        bucket[0], bucket[1] = tokens, now
        return self._state(tokens, allowed)

    def _state(self, tokens: float, allowed: bool) -> RateState:
        return RateState(
            allowed=allowed,
            limit=self.burst,
            remaining=int(tokens),
            reset_seconds=(self.burst - tokens) / self.per_second,
            retry_after_seconds=max(0.0, 1 - tokens) / self.per_second,
            per_second=self.per_second,
        )

    def _drop_idle(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self._refill_seconds:
                return
            buckets.popitem(last=False)


def with_rate_headers(scope: Scope, message: Message) -> Message:
    """``message`` (an ``http.response.start``) with the request's rate headers, when
    the request was rate-limited by key."""
    state: RateState | None = scope.get("state", {}).get(RATE_STATE)
    if state is None:
        return message
    return {**message, "headers": [*message.get("headers", []), *state.headers()]}
