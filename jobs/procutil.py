"""Process helpers shared by the CLI and the worker."""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux).

    Used as ``preexec_fn``: it runs in the child between fork and exec, so a child of a
    worker or of ``rft serve`` never outlives it, even when the parent is SIGKILLed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass  # not glibc: the parent's own signal handling still stops the child
