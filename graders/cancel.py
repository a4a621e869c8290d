"""Cancellation that crosses into worker threads: ``CancelToken`` and the current token.

A caller that runs grading in a thread (the API's ``/graders/run``) makes a token, runs
the grading inside ``use_token(token)`` in that thread, and calls ``token.cancel()``
when the result is no longer wanted (the client went away). Code deep in the graders
that holds something worth stopping early (a sandbox process) registers with whatever
token is current::

    token = cancel.current_token()
    unregister = token.on_cancel(self.kill) if token is not None else None
    ...
    if unregister is not None:
        unregister()          # done: a later cancel() must not touch this sandbox

The token lives in a ``contextvars.ContextVar``. ``anyio.to_thread.run_sync`` copies the
caller's context into the thread, but a plain ``threading.Thread`` or a
``ThreadPoolExecutor`` does not: code that fans out to such threads and wants them
cancellable must run them in ``contextvars.copy_context()`` or call ``use_token`` in each.

Callbacks run in the thread that calls ``cancel()``, while the grading thread may be in
the middle of using the resource: a callback should only signal (kill a process, set a
flag) and leave the cleanup (closing pipes, removing files) to the grading thread,
which notices the dead process and cleans up as it would after a crash.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["CancelToken", "current_token", "use_token"]

logger = logging.getLogger(__name__)

_current: ContextVar[CancelToken | None] = ContextVar("rft_cancel_token", default=None)


def _noop() -> None:
    return None


def _call(fn: Callable[[], object]) -> None:
    # A broken callback must not stop the others, nor fail the code that cancelled.
    try:
        fn()
    except Exception:
        logger.exception("cancel callback %r failed", fn)


class CancelToken:
    """A one-way switch: once ``cancel()`` is called, ``cancelled`` is True for good and
    every registered callback has run (or is running) exactly once. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._ids = itertools.count()

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` has been called."""
        return self._cancelled

    def cancel(self) -> None:
        """Cancel: run every registered callback once, in registration order, in this
        thread. Exceptions from callbacks are logged, not raised. Calling it again does
        nothing."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for fn in callbacks:
            _call(fn)

    def on_cancel(self, fn: Callable[[], object]) -> Callable[[], None]:
        """Run ``fn()`` when the token is cancelled (at once, in this thread, if it already
        is). Returns a function that unregisters ``fn``; calling it after ``fn`` ran, or
        twice, does nothing. (Unregistering while another thread is inside ``cancel()``
        cannot stop a callback that ``cancel()`` has already picked up.)"""
        with self._lock:
            if not self._cancelled:
                key = next(self._ids)
                self._callbacks[key] = fn

                def unregister() -> None:
                    with self._lock:
                        self._callbacks.pop(key, None)

                return unregister
        _call(fn)
        return _noop

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else f"{len(self._callbacks)} callbacks"
        return f"<CancelToken {state}>"


def current_token() -> CancelToken | None:
    """The token set by the innermost ``use_token`` in this context, or None."""
    return _current.get()


@contextmanager
def use_token(token: CancelToken) -> Iterator[CancelToken]:
    """Make ``token`` the current token for the code inside the ``with`` (this thread or
    task, and threads started with a copy of its context)."""
    reset = _current.set(token)
    try:
        yield token
    finally:
        _current.reset(reset)
