"""Outbound HTTP for graders: one shared httpx client, bounded retries, capped bodies,
and the SSRF guard for user-supplied URLs (``endpoint`` graders).

The guard resolves the host once, refuses private, loopback, link-local (cloud
metadata), multicast, reserved and unspecified addresses (IPv4, IPv6, and IPv4-mapped /
-compatible / 6to4 / Teredo IPv6 forms), then connects to the address it checked (the
URL's host is kept for the ``Host`` header and TLS SNI), so a DNS answer that changes
between check and connect cannot redirect the request. Redirects are never followed.
Hosts or networks the operator lists in ``GraderContext.endpoint_allowlist`` are allowed.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import random
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from graders.base import SampleError

logger = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=1)
def client() -> httpx.Client:
    """The shared client (thread-safe, pooled; no proxies from the environment)."""
    return httpx.Client(follow_redirects=False, trust_env=False, limits=httpx.Limits(max_connections=64))


def _embedded_v4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    packed = addr.packed
    if packed[:12] == bytes(12) and packed[12:] != bytes(4):  # IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


def is_public(addr: IPAddress) -> bool:
    """False for any address a grader must not reach without the operator's consent."""
    for candidate in (addr, _embedded_v4(addr)):
        if candidate is None:
            continue
        if (
            candidate.is_private
            or candidate.is_loopback
            or candidate.is_link_local
            or candidate.is_multicast
            or candidate.is_reserved
            or candidate.is_unspecified
            or not candidate.is_global
        ):
            return False
    return True


def _allowed(host: str, addr: IPAddress, allowlist: list[str]) -> bool:
    for entry in allowlist:
        entry = entry.strip()
        if not entry:
            continue
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if host.lower() == entry.lower():
                return True
    return False


def guarded_target(url: str, allowlist: list[str]) -> tuple[str, str, str]:
    """Check ``url`` and pin it: returns (url with the checked IP, Host header, SNI name).

    Raises ``SampleError('other_error')`` naming why the URL is refused.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise SampleError("other_error", "endpoint url must be http or https")
    host = parts.hostname
    if not host:
        raise SampleError("other_error", "endpoint url has no host")
    if parts.username or parts.password:
        raise SampleError("other_error", "endpoint url must not carry credentials; use headers")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise SampleError("other_error", f"cannot resolve endpoint host {host!r}: {exc}") from None
    addrs = []
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not is_public(addr) and not _allowed(host, addr, allowlist):
            raise SampleError(
                "other_error",
                f"endpoint host {host!r} resolves to a non-public address ({addr}); "
                "an operator can allow it with endpoint_allowlist",
            )
        addrs.append(addr)
    addr = addrs[0]
    netloc = f"[{addr}]" if addr.version == 6 else str(addr)
    if parts.port:
        netloc += f":{parts.port}"
    host_header = host if not parts.port else f"{host}:{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return pinned, host_header, host


def post_json(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
    retries: int,
    server_flag: str,
    extensions: dict[str, Any] | None = None,
) -> Any:
    """POST ``body`` as JSON and return the decoded JSON answer.

    Retries transport errors and 408/409/425/429/5xx with jittered exponential backoff
    (``retries`` extra attempts). Refuses bodies over 1 MiB either way and redirects.
    Failures raise ``SampleError(server_flag)``.
    """
    payload = json.dumps(body, ensure_ascii=False).encode()
    if len(payload) > MAX_BODY:
        raise SampleError("other_error", "request body is larger than 1 MiB")
    headers = {"content-type": "application/json", **headers}
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(8.0, 0.25 * 2**attempt) * (0.5 + random.random()))
        try:
            with client().stream(
                "POST", url, content=payload, headers=headers, timeout=timeout_s, extensions=extensions or {}
            ) as resp:
                if resp.status_code in RETRY_STATUS:
                    last = f"HTTP {resp.status_code}"
                    continue
                if 300 <= resp.status_code < 400:
                    raise SampleError(server_flag, f"HTTP {resp.status_code}: redirects are not followed")
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) > MAX_BODY:
                        raise SampleError(server_flag, "response is larger than 1 MiB")
                if resp.status_code >= 400:
                    raise SampleError(server_flag, f"HTTP {resp.status_code}: {bytes(data[:200]).decode(errors='replace')}")
        except httpx.TimeoutException:
            last = f"timed out after {timeout_s:g}s"
            continue
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        try:
            return json.loads(bytes(data))
        except ValueError:
            raise SampleError(server_flag, "the answer is not JSON") from None
    raise SampleError(server_flag, f"no answer after {retries + 1} attempts ({last})")


class RateLimiter:
    """At most ``rate`` calls per second per key, spaced evenly (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait(self, key: str, rate: float) -> None:
        """Block until the next call for ``key`` may start."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(key, now))
            self._next[key] = start + 1.0 / rate
        if start > now:
            time.sleep(start - now)


rate_limiter = RateLimiter()
