"""The per-key token bucket (service.rate_limit) on a fake clock."""

from __future__ import annotations

from service.rate_limit import RateLimiter, go_duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate_and_a_refusal_takes_no_token():
    clock = Clock()
    limiter = RateLimiter(per_second=2, burst=3, clock=clock)
    states = [limiter.take("k") for _ in range(4)]
    assert [s.allowed for s in states] == [True, True, True, False]
    assert [s.remaining for s in states] == [2, 1, 0, 0]
    refused = states[-1]
    assert refused.retry_after_seconds == 0.5 and refused.retry_after == "1"
    assert refused.reset_seconds == 1.5  # three tokens at 2/s
    clock.now += 0.25
    assert not limiter.take("k").allowed  # half a token: still refused, and not spent
    clock.now += 0.25
    assert limiter.take("k").allowed  # the refusals did not delay the next token


def test_keys_are_apart():
    limiter = RateLimiter(per_second=1, burst=1, clock=Clock())
    assert limiter.take("a").allowed and not limiter.take("a").allowed
    assert limiter.take("b").allowed


def test_idle_buckets_are_dropped():
    clock = Clock()
    limiter = RateLimiter(per_second=10, burst=5, clock=clock)  # refills in 0.5 s
    for i in range(1000):
        limiter.take(f"key-{i}")
    assert len(limiter) == 1000
    clock.now += 0.5  # every bucket is full again, as good as a new one
    state = limiter.take("another")
    assert len(limiter) == 1 and state.remaining == 4


def test_reset_is_written_like_openai():
    assert [go_duration(s) for s in (0, 0.0201, 1, 1.5, 60, 90.25)] == ["0ms", "21ms", "1s", "1.5s", "1m0s", "1m30.25s"]
