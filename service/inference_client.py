"""Talking to the inference process over its internal HTTP (torch-free)."""

from __future__ import annotations

import logging

import httpx
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from service.errors import ApiError, ServiceUnavailable
from service.settings import Settings

log = logging.getLogger(__name__)

# What a client should wait before retrying when the inference process is away.
RETRY_AFTER_S = "5"


def _client(settings: Settings) -> httpx.AsyncClient:
    if not settings.inference_url:
        raise ServiceUnavailable("This server runs no inference process (started with --no-inference).",
                                 headers={"Retry-After": RETRY_AFTER_S})
    return httpx.AsyncClient(
        base_url=settings.inference_url,
        headers={"Authorization": f"Bearer {settings.internal_token}"},
        # Generation can legitimately take minutes; connecting should not.
        timeout=httpx.Timeout(settings.inference_timeout_seconds, connect=5.0),
    )


async def forward(settings: Settings, path: str, body: dict, stream: bool) -> Response:
    """POST ``body`` to ``path`` of the inference process and hand its answer back as
    it is: JSON (errors included, already in OpenAI's envelope) or an SSE stream passed
    through chunk by chunk."""
    client = _client(settings)
    try:
        upstream = await client.send(client.build_request("POST", path, json=body), stream=True)
    except httpx.TransportError as exc:
        await client.aclose()
        log.warning("inference process unreachable: %s", exc)
        raise ServiceUnavailable("The inference process is not reachable; retry shortly.",
                                 headers={"Retry-After": RETRY_AFTER_S}) from None

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    if upstream.status_code == 401:
        await close()
        # Our own misconfiguration, not the caller's key: do not show them a 401.
        raise ApiError("The inference process refused this server's internal token.")
    if stream and upstream.status_code == 200:
        return StreamingResponse(upstream.aiter_raw(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"}, background=BackgroundTask(close))
    content = await upstream.aread()
    await close()
    headers = {k: v for k, v in upstream.headers.items() if k.lower() == "retry-after"}
    return Response(content, status_code=upstream.status_code, media_type="application/json", headers=headers)


async def unload(settings: Settings, folder: str) -> None:
    """Ask the inference process to drop ``folder``. A failure only costs memory until
    the LRU evicts it, so it is logged rather than raised."""
    if not settings.inference_url:
        return
    async with _client(settings) as client:
        try:
            r = await client.post("/internal/unload", json={"model_path": folder})
            r.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not unload %s from the inference process: %s", folder, exc)
