"""Prometheus metrics of the API, in the process registry the projector's counters
(cdc_consumers.metrics, imported here so they are always exposed) also live in."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

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
