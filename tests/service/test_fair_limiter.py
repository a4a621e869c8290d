"""``service.fair_limiter.FairLimiter``: caps, round-robin grants, cancellation."""

from __future__ import annotations

import random

import anyio
import pytest

from service.fair_limiter import FairLimiter


async def _settle() -> None:
    # Let every runnable task run until it blocks (the tests use no timers).
    for _ in range(20):
        await anyio.sleep(0)


class _Holder:
    """A task that takes a slot for ``key`` and holds it until ``done`` is set."""

    def __init__(self, limiter: FairLimiter, key: str, log: list[str], name: str) -> None:
        self.limiter, self.key, self.log, self.name = limiter, key, log, name
        self.done = anyio.Event()
        self.scope = anyio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            async with self.limiter.slot(self.key):
                self.log.append(self.name)
                await self.done.wait()


def test_global_and_per_key_caps():
    async def main() -> None:
        limiter = FairLimiter(total=3, per_key=2)
        log: list[str] = []
        holders = [_Holder(limiter, "a", log, f"a{i}") for i in range(5)]
        holders += [_Holder(limiter, "b", log, f"b{i}") for i in range(5)]
        async with anyio.create_task_group() as tg:
            for h in holders:
                tg.start_soon(h.run)
            await _settle()
            assert log == ["a0", "a1", "b0"]
            assert (limiter.in_use, limiter.held_by("a"), limiter.held_by("b")) == (3, 2, 1)
            assert limiter.waiting == 7
            for h in holders:
                h.done.set()
        assert limiter.in_use == 0 and limiter.waiting == 0

    anyio.run(main)


def test_waiters_are_served_round_robin_by_key():
    async def main() -> None:
        # One slot, no per-key cap in the way: the order of grants is the turn order.
        limiter = FairLimiter(total=1, per_key=1)
        log: list[str] = []
        first = _Holder(limiter, "x", log, "x0")
        holders = [_Holder(limiter, "a", log, f"a{i}") for i in range(5)]
        holders += [_Holder(limiter, "b", log, "b0"), _Holder(limiter, "c", log, "c0")]
        holders.append(_Holder(limiter, "b", log, "b1"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.run)
            await _settle()
            for h in holders:  # queued in this order, a's five first
                tg.start_soon(h.run)
                await _settle()
            current = first
            for _ in holders:
                current.done.set()
                await _settle()
                current = next(h for h in holders if h.name == log[-1])
            current.done.set()
        assert log == ["x0", "a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]

    anyio.run(main)


def test_a_flooding_key_does_not_starve_a_newcomer():
    async def main() -> None:
        limiter = FairLimiter(total=2, per_key=2)
        log: list[str] = []
        flood = [_Holder(limiter, "a", log, f"a{i}") for i in range(100)]
        late = _Holder(limiter, "b", log, "b0")
        async with anyio.create_task_group() as tg:
            for h in flood:
                tg.start_soon(h.run)
            await _settle()
            tg.start_soon(late.run)
            await _settle()
            flood[0].done.set()  # the first slot to free goes to b, not to a's queue
            await _settle()
            assert log[-1] == "b0"
            for h in [*flood, late]:
                h.done.set()

    anyio.run(main)


def test_a_cancelled_waiter_holds_nothing():
    async def main() -> None:
        limiter = FairLimiter(total=1, per_key=1)
        log: list[str] = []
        holder = _Holder(limiter, "a", log, "held")
        waiter = _Holder(limiter, "b", log, "abandoned")
        async with anyio.create_task_group() as tg:
            tg.start_soon(holder.run)
            tg.start_soon(waiter.run)
            await _settle()
            assert limiter.waiting == 1
            waiter.scope.cancel()
            await _settle()
            # The holder keeps its slot; the cancelled waiter took nothing and left.
            assert (limiter.in_use, limiter.waiting, limiter.held_by("a")) == (1, 0, 1)
            holder.done.set()
            await _settle()
        assert log == ["held"]
        assert limiter.in_use == 0
        with anyio.fail_after(1):
            async with limiter.slot("b"):
                assert limiter.in_use == 1

    anyio.run(main)


def test_a_waiter_cancelled_right_after_its_grant_hands_the_slot_on():
    # anyio does not cancel a wait that already succeeded, but a plain asyncio
    # task.cancel() (what a server does to a request task) throws into it anyway.
    import asyncio

    async def main() -> None:
        limiter = FairLimiter(total=1, per_key=1)
        got: list[str] = []

        async def take(key: str, release: asyncio.Event) -> None:
            async with limiter.slot(key):
                got.append(key)
                await release.wait()

        done = {k: asyncio.Event() for k in "abc"}
        tasks = {}
        for k in "abc":
            tasks[k] = asyncio.create_task(take(k, done[k]))
            await asyncio.sleep(0)
        assert got == ["a"] and limiter.waiting == 2
        done["a"].set()
        await asyncio.sleep(0)  # a releases: b is granted but has not resumed
        assert limiter.held_by("b") == 1 and got == ["a"]
        tasks["b"].cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert tasks["b"].cancelled()
        assert got == ["a", "c"] and limiter.held_by("c") == 1 and limiter.in_use == 1
        done["c"].set()
        await tasks["c"]
        assert limiter.in_use == 0 and limiter.waiting == 0

    anyio.run(main)


def test_no_leak_after_many_random_cancellations():
    async def main() -> None:
        limiter = FairLimiter(total=3, per_key=2)
        rng = random.Random(7)
        peak = {"total": 0, "a": 0, "b": 0, "c": 0}

        async def client(key: str) -> None:
            with anyio.move_on_after(rng.uniform(0, 0.02)):
                async with limiter.slot(key):
                    peak["total"] = max(peak["total"], limiter.in_use)
                    peak[key] = max(peak[key], limiter.held_by(key))
                    await anyio.sleep(rng.uniform(0, 0.01))

        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(client, rng.choice("aabc"))
        assert limiter.in_use == 0 and limiter.waiting == 0
        assert limiter._held == {} and not limiter._queues and limiter._last_grant == {}
        assert peak["total"] <= 3 and max(peak["a"], peak["b"], peak["c"]) <= 2

    anyio.run(main)


def test_release_without_a_slot_is_a_bug():
    limiter = FairLimiter(total=1, per_key=1)
    with pytest.raises(RuntimeError):
        limiter.release("a")
    with pytest.raises(ValueError):
        FairLimiter(total=0, per_key=1)
