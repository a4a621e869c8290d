"""Host-wide leases of sandbox uids: no two live sandboxes ever share a uid.

A uid is the unit the kernel counts some limits by (``RLIMIT_NPROC`` counts every
process of a real uid on the host), and processes of one uid may signal and trace each
other. So each sandbox runs its samples under a uid no other live sandbox holds, in this
process or in any other process of the host (the API, every trainer child, every
worker): one tenant's fork bomb then exhausts only its own sandbox's quota.

The lease is an abstract-namespace Unix socket named after the uid: binding it is
atomic and exclusive per network namespace, and the kernel releases it when the holder
closes it or dies, so a crashed process never leaks a uid and no file is written.
"""

from __future__ import annotations

import errno
import random
import socket

from graders.base import SampleError

_PREFIX = "rft-sandbox-uid-"


class UidLease:
    """One leased uid; ``release()`` (or the holder's death) frees it."""

    def __init__(self, uid: int, sock: socket.socket):
        self.uid = uid
        self._sock: socket.socket | None = sock

    def release(self) -> None:
        """Give the uid back (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def lease_uid(base: int, count: int) -> UidLease:
    """Lease a uid in ``[base, base + count)`` that no live sandbox on this host holds.

    Raises ``SampleError('python_grader_server_error')`` when every uid of the range is
    in use (more live sandboxes than ``count``).
    """
    start = random.randrange(count)
    for offset in range(count):
        uid = base + (start + offset) % count
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(f"\0{_PREFIX}{uid}")
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        return UidLease(uid, sock)
    raise SampleError(
        "python_grader_server_error",
        f"all {count} sandbox uids from {base} are in use; raise sandbox_uid_count or lower concurrency",
    )
