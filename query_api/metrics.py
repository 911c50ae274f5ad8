"""Prometheus metrics of the API, in the process registry the projector's counters
(cdc_consumers.metrics, imported here so they are always exposed) also live in."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from prometheus_client import Gauge, Histogram

import cdc_consumers.metrics as consumer_metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_SECONDS = Histogram(
    "stockcdc_api_request_seconds",
    "API request latency by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROJECTION_LAG_MS = Gauge(
    "stockcdc_projection_lag_ms",
    "Milliseconds between now and a region's watermark (max of commit time, heartbeat)",
    ["region"],
)
FIGURES_LAG_MS = Gauge(
    "stockcdc_figures_lag_ms",
    "Milliseconds between now and a region's stock figures watermark (ahead of"
    " stockcdc_projection_lag_ms's by up to rows_max_ms: what stock answers read at)",
    ["region"],
)
PROJECTION_LSN = Gauge(
    "stockcdc_projection_applied_lsn",
    "Commit LSN applied, by region, as the API reads it",
    ["region"],
)

#: The consumer's dead-letter counter (same registry), re-exported for readers.
DEADLETTERS = consumer_metrics.DEADLETTERS


class LatencyMiddleware:
    """Times every request under its route template (`/v1/stock/{owner}/...`), never the
    raw path, so label cardinality stays bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(template, scope.get("method", ""), str(status[0])).observe(
                time.perf_counter() - started
            )


class RequestLimits:
    """Refuses oversized requests before any route, auth or body parsing runs: a URL
    longer than `max_url_chars` (414), a body longer than `max_body_bytes` by its
    Content-Length (413 at once) or, for a body without one, as soon as the bytes read
    pass the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_url_chars: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_url = max_url_chars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_chars = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if url_chars > self.max_url:
            await _refuse(send, 414, "uri_too_long", f"URL longer than {self.max_url} chars")
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _refuse(send, 413, "too_large", f"body larger than {self.max_body} bytes")
            return
        seen = 0
        over = False
        answered = False

        async def bounded() -> Message:
            # Past the limit the app sees a disconnect; whatever it answers is replaced.
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if over:
                if not answered:
                    answered = True
                    await _refuse(send, 413, "too_large", f"body larger than {self.max_body} bytes")
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, guarded)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await _refuse(send, 413, "too_large", f"body larger than {self.max_body} bytes")


async def _refuse(send: Send, status: int, code: str, detail: str) -> None:
    body = orjson.dumps({"error": code, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
