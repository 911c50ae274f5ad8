"""Prometheus metrics of the projector (exposed by the API's /metrics in the same process,
or by the consumer's own endpoint in server mode)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "stockcdc_events_total", "Records consumed, by region and kind", ["region", "kind"]
)
DEADLETTERS = Counter(
    "stockcdc_deadletters_total",
    "Records sent to the dead-letter topic, by region and reason",
    ["region", "reason"],
)
ROWS_WRITTEN = Counter(
    "stockcdc_rows_written_total", "Row versions written to ClickHouse", ["region"]
)
SNAPSHOT_ROWS = Counter(
    "stockcdc_snapshot_rows_total", "Initial-load (snapshot) rows projected, by region", ["region"]
)
TRANSACTIONS = Counter("stockcdc_transactions_total", "WMS transactions applied", ["region"])
WRITE_RETRIES = Counter(
    "stockcdc_write_retries_total", "ClickHouse writes retried after a transient error"
)
COMMIT_FAILURES = Counter(
    "stockcdc_commit_failures_total", "Offset commits refused (partition moved in a rebalance)"
)
FLUSH_SECONDS = Histogram(
    "stockcdc_flush_seconds",
    "Time from a flush's write to its offsets' commit (its rows included, which may follow"
    " its figures by up to rows_max_ms)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WRITE_SECONDS = Histogram(
    "stockcdc_write_seconds",
    "Time the writer spent on one flush's batches (with rows later: their figures),"
    " retries included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROWS_WRITE_SECONDS = Histogram(
    "stockcdc_rows_write_seconds",
    "Time the writer spent writing rows after their figures, per call (a call that gives"
    " way to a flush ends early)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WATERMARK_LSN = Gauge("stockcdc_watermark_lsn", "Commit LSN applied, by region", ["region"])
WATERMARK_COMMIT_TS = Gauge(
    "stockcdc_watermark_commit_ts_seconds",
    "Source commit time of the last applied transaction",
    ["region"],
)
HEARTBEAT_TS = Gauge(
    "stockcdc_heartbeat_ts_seconds", "Latest Debezium heartbeat applied", ["region"]
)
ASSIGNED = Gauge("stockcdc_assigned_regions", "Regions this consumer projects")
