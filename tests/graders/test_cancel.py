"""``graders.cancel``: the token, its callbacks, and the current token across threads."""

from __future__ import annotations

import logging
import threading

import anyio
import anyio.to_thread

from graders.cancel import CancelToken, current_token, use_token


def test_cancel_runs_each_callback_once_in_order():
    token = CancelToken()
    calls: list[str] = []
    token.on_cancel(lambda: calls.append("a"))
    token.on_cancel(lambda: calls.append("b"))
    assert not token.cancelled and calls == []
    token.cancel()
    assert token.cancelled
    assert calls == ["a", "b"]
    token.cancel()
    assert calls == ["a", "b"]


def test_callback_registered_after_cancel_runs_at_once():
    token = CancelToken()
    token.cancel()
    calls: list[int] = []
    unregister = token.on_cancel(lambda: calls.append(1))
    assert calls == [1]
    unregister()  # harmless
    token.cancel()
    assert calls == [1]


def test_unregister_stops_the_callback():
    token = CancelToken()
    calls: list[str] = []
    unregister = token.on_cancel(lambda: calls.append("gone"))
    token.on_cancel(lambda: calls.append("kept"))
    unregister()
    unregister()  # twice is fine
    token.cancel()
    assert calls == ["kept"]


def test_a_failing_callback_is_logged_and_the_others_still_run(caplog):
    token = CancelToken()
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("kill failed")

    token.on_cancel(boom)
    token.on_cancel(lambda: calls.append("after"))
    with caplog.at_level(logging.ERROR, logger="graders.cancel"):
        token.cancel()
    assert calls == ["after"]
    assert "kill failed" in caplog.text
    with caplog.at_level(logging.ERROR, logger="graders.cancel"):
        token.on_cancel(boom)  # already cancelled: runs now, still does not raise


def test_cancel_from_another_thread_reaches_a_waiting_thread():
    token = CancelToken()
    woke = threading.Event()
    registered = threading.Event()

    def worker() -> None:
        token.on_cancel(woke.set)
        registered.set()
        woke.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    assert registered.wait(5)
    token.cancel()
    thread.join(5)
    assert woke.is_set() and not thread.is_alive()


def test_concurrent_cancel_runs_callbacks_once():
    token = CancelToken()
    calls: list[int] = []
    lock = threading.Lock()

    def record() -> None:
        with lock:
            calls.append(1)

    for _ in range(50):
        token.on_cancel(record)
    threads = [threading.Thread(target=token.cancel) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 50


def test_use_token_sets_and_restores_the_current_token():
    outer, inner = CancelToken(), CancelToken()
    assert current_token() is None
    with use_token(outer):
        assert current_token() is outer
        with use_token(inner) as t:
            assert t is inner and current_token() is inner
        assert current_token() is outer
    assert current_token() is None


def test_current_token_is_per_thread():
    token = CancelToken()
    seen: list[object] = []
    with use_token(token):
        thread = threading.Thread(target=lambda: seen.append(current_token()))
        thread.start()
        thread.join()
    # A plain thread starts with an empty context (documented in graders.cancel).
    assert seen == [None]


def test_anyio_worker_threads_see_the_callers_token():
    # The API grades in anyio.to_thread.run_sync (it also sets the token inside the
    # thread); anyio copies the caller's context into the thread.
    token = CancelToken()

    async def main() -> object:
        with use_token(token):
            return await anyio.to_thread.run_sync(current_token)

    assert anyio.run(main) is token
