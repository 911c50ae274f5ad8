"""Initial load: time to snapshot and project one region of ≥ 10M balance rows.

    .venv/bin/python -m bench.initial_load            # 10M balance rows in one region
    .venv/bin/python -m bench.initial_load --quick    # CI smoke: 50k

An isolated pipeline's region is seeded by the simulator (bulk COPY; timed apart), then
its connector is registered: Debezium's initial snapshot and the projector (a child
process, so its peak RSS is its own) run together, as when a region is added to a live
system. Done when the region's watermark exists (the snapshot is complete and visible,
the serving figures rebuilt) and the projection holds as many current balance rows as
the source.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from bench.common import RESULTS_DIR, Profile, machine, peak_rss_mb
from cdc_consumers.projector import Projector
from infra.pipeline import IsolatedPipeline
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.writer import ProjectionWriter
from simulator.seed import parse_size, seed_region
from stockcdc.settings import Settings, get_settings

GOAL = {"balance_rows": 10_000_000}


def _project(settings: Settings, region: str, source_rows: int, timeout_s: float, out: Any) -> None:
    """Child: the projector from an empty embedded ClickHouse until `region` is visible
    with all its balance rows; reports when, and the committed offsets over time."""
    client = make_client(settings)
    migrate(client, settings.clickhouse_cluster)
    probe = make_client(settings)  # the loop's own handle; the projector has the other
    projector = Projector(settings, ProjectionWriter(client))
    thread = threading.Thread(target=projector.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    visible_at = None
    while thread.is_alive() and time.perf_counter() - started < timeout_s:
        time.sleep(0.5)
        rows = probe.query(
            "SELECT count() FROM _watermark_max WHERE region = {r:String}", parameters={"r": region}
        ).result_rows
        if rows[0][0]:
            visible_at = time.perf_counter() - started
            break
    projected = int(
        probe.query(
            "SELECT count() FROM cur_inventory WHERE region = {r:String}", parameters={"r": region}
        ).result_rows[0][0]
    )
    keys = int(
        probe.query(
            "SELECT count() FROM (SELECT owner, warehouse, sku FROM stock_current"
            " WHERE region = {r:String} GROUP BY owner, warehouse, sku)",
            parameters={"r": region},
        ).result_rows[0][0]
    )
    rss = peak_rss_mb()
    projector.stop.set()
    thread.join(60)
    out.put(
        {
            "visible_s": visible_at,
            "projected_balance_rows": projected,
            "source_balance_rows": source_rows,
            "stock_keys": keys,
            "projector_peak_rss_mb": rss,
        }
    )


def _end_offset(settings: Settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp]).get(tp, 0))
    finally:
        consumer.close()


def run(profile: Profile, size: str | None = None) -> dict[str, Any]:
    """Seed one region (`size` balance rows, default the profile's), then snapshot and
    project it; seconds and rates."""
    size = size or profile.pick("50k", "10M")
    timeout_s = profile.pick(300.0, 3600.0)
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="bench-initial-load-") as tmp:
        pipeline = IsolatedPipeline(base, Path(tmp))
        try:
            s = pipeline.settings
            region = pipeline.regions[0]
            t = time.perf_counter()
            with psycopg.connect(s.pg_dsn(region)) as conn:
                seed_region(conn, region, seed=5, size=parse_size(size))
                (count,) = conn.execute("SELECT count(*) FROM inventory").fetchall()[0]
                source_rows = int(count)
            seed_s = time.perf_counter() - t

            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            child = ctx.Process(target=_project, args=(s, region.name, source_rows, timeout_s, q))
            child.start()
            t = time.perf_counter()
            pipeline.start_capture()
            result: dict[str, Any] = q.get()
            total_s = time.perf_counter() - t
            child.join()
            events = _end_offset(s, region.cdc_topic)
        finally:
            pipeline.close()
    if result["visible_s"] is None or result["projected_balance_rows"] != source_rows:
        raise RuntimeError(
            f"not visible within {timeout_s:.0f} s, or incomplete: projected"
            f" {result['projected_balance_rows']} balance rows of {source_rows}"
        )
    return {
        "method": (
            "One region of an isolated pipeline seeded by the simulator (COPY), then its"
            " connector registered: Debezium's snapshot and the projector (child process,"
            " embedded chDB) run together until the region's watermark exists and the"
            " projection holds every balance row."
        ),
        "goal": GOAL,
        "seed_size": size,
        "seed_seconds": round(seed_s, 1),
        "balance_rows": source_rows,
        "topic_events": events,
        "seconds_to_visible": round(total_s, 1),
        "balance_rows_per_s": round(source_rows / total_s),
        "events_per_s": round(events / total_s),
        "stock_keys": result["stock_keys"],
        "projector_peak_rss_mb": result["projector_peak_rss_mb"],
        "machine": machine(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="CI smoke: 50k balance rows")
    ap.add_argument("--size", default=None, help="balance rows to seed, e.g. 1M")
    args = ap.parse_args()
    result = run(Profile("quick" if args.quick else "full"), args.size)
    out = RESULTS_DIR / "initial_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
