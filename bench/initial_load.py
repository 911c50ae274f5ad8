"""Initial load: time to snapshot and project one region of ≥ 10M balance rows.

    .venv/bin/python -m bench.initial_load              # 10M balance rows (~60 min here)
    .venv/bin/python -m bench.initial_load --size 1M    # a smaller region (~7 min)
    .venv/bin/python -m bench.initial_load --quick      # CI smoke: 50k

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
import time
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer, TopicPartition

from bench.common import RESULTS_DIR, Profile, machine, peak_rss_mb
from cdc_consumers.projector import Projector
from cdc_consumers.service import running
from infra.pipeline import IsolatedPipeline
from read_model.client import make_client
from read_model.migrate import migrate
from read_model.writer import ProjectionWriter
from simulator.seed import parse_size, seed_region
from stockcdc.settings import Settings, get_settings

GOAL = {"balance_rows": 10_000_000}
#: The full profile's seed: the goal's size. A balance row is ~2.9 snapshot events (its
#: opening ledger row, a serial every other row), and Debezium's snapshot streams ~10k
#: events/s here while the projector shares the cores: 10.1M rows were 29M events,
#: visible after 50 minutes (7 more to seed).
FULL_SIZE = "10M"


def _project(settings: Settings, region: str, timeout_s: float, out: Any) -> None:
    """Child: the projector as `stockcdc project` runs it (`service.running`: its thread
    and GC setting), from an empty embedded ClickHouse until `region` is visible: its
    watermark is past the snapshot (wall-clock time reported at once), then the counts."""
    client = make_client(settings)
    migrate(client, settings.clickhouse_cluster)
    probe = make_client(settings)  # the loop's own handle; the projector has the other
    projector = Projector(settings, ProjectionWriter(client))
    started = time.perf_counter()
    cpu0 = time.process_time()
    visible_at = None
    with running(projector) as thread:
        while thread.is_alive() and time.perf_counter() - started < timeout_s:
            time.sleep(0.5)
            (lsn,) = probe.query(
                "SELECT max(applied_commit_lsn) FROM _watermark_max WHERE region = {r:String}",
                parameters={"r": region},
            ).result_rows[0]
            if lsn:  # a heartbeat alone writes a watermark at LSN 0
                visible_at = time.time()
                break
        out.put({"visible_at": visible_at})
        cpu = time.process_time() - cpu0
        rss = peak_rss_mb()
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
    out.put(
        {
            "projected_balance_rows": projected,
            "stock_keys": keys,
            "projector_cpu_seconds": round(cpu, 1),
            "projector_peak_rss_mb": rss,
        }
    )


def _snapshot_span(settings: Settings, topic: str) -> tuple[int, float, float]:
    """(records, first timestamp, last timestamp) of the initial snapshot on the region's
    topic: up to the record Debezium marks `last` (Kafka timestamps, seconds)."""
    consumer = KafkaConsumer(**settings.kafka_client_config(), enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        end = int(consumer.end_offsets([tp])[tp])

        def read(start: int, stop: int) -> list[Any]:
            consumer.seek(tp, start)
            got: list[Any] = []
            while not got or got[-1].offset < stop - 1:
                got += consumer.poll(timeout_ms=2000).get(tp, [])
            return got

        (first,) = read(0, 1)[:1]
        stop, window = end, 5000  # after the snapshot: a heartbeat a second
        while stop > 0:
            start = max(0, stop - window)
            last = [r for r in read(start, stop) if b'"snapshot":"last"' in (r.value or b"")]
            if last:
                return last[-1].offset + 1, first.timestamp / 1000, last[-1].timestamp / 1000
            stop, window = start, window * 4
        raise RuntimeError(f"no snapshot record marked last in {topic}")
    finally:
        consumer.close()


def run(profile: Profile, size: str | None = None) -> dict[str, Any]:
    """Seed one region (`size` balance rows, default the profile's), then snapshot and
    project it; seconds and rates, the seed's time apart."""
    size = size or profile.pick("50k", FULL_SIZE)
    # ~8k snapshot events/s here and ~2.9 events per balance row: 10M rows is about an
    # hour, so the bound grows with the size (twice the expected time, at least an hour)
    timeout_s = profile.pick(300.0, max(3600.0, parse_size(size).balance_rows * 2.9 / 8000 * 2))
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="bench-initial-load-") as tmp:
        pipeline = IsolatedPipeline(base, Path(tmp))
        try:
            s = pipeline.settings
            region = pipeline.regions[0]
            with psycopg.connect(s.pg_dsn(region)) as conn:
                seeded = seed_region(conn, region, seed=5, size=parse_size(size))
                (count,) = conn.execute("SELECT count(*) FROM inventory").fetchall()[0]
                source_rows = int(count)

            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            child = ctx.Process(target=_project, args=(s, region.name, timeout_s, q))
            child.start()
            capture_at = time.time()
            pipeline.start_capture()
            visible_at = q.get()["visible_at"]
            result: dict[str, Any] = q.get()
            child.join()
            events, first_ts, last_ts = _snapshot_span(s, region.cdc_topic)
        finally:
            pipeline.close()
    if visible_at is None or result["projected_balance_rows"] != source_rows:
        raise RuntimeError(
            f"not visible within {timeout_s:.0f} s, or incomplete: projected"
            f" {result['projected_balance_rows']} balance rows of {source_rows}"
        )
    total_s = visible_at - capture_at
    at_goal = GOAL["balance_rows"] / source_rows / 60  # minutes per second measured, at 10M
    return {
        "method": (
            "One region of an isolated pipeline seeded by the simulator (COPY, timed apart),"
            " then its connector registered: Debezium's snapshot and the projector (child"
            " process, embedded chDB) run together until the region's watermark is past the"
            " snapshot, and the projection holds as many current balance rows as the source."
        ),
        "goal": GOAL,
        "profile": profile.name,
        "seed_size": size,
        "seed_seconds": round(seeded.seconds, 1),
        "seed_rows_by_table": seeded.rows_by_table,
        "balance_rows": source_rows,
        "projected_balance_rows": result["projected_balance_rows"],
        "snapshot_events": events,
        "seconds_to_visible": round(total_s, 1),
        "balance_rows_per_s": round(source_rows / total_s),
        "events_per_s": round(events / total_s),
        "debezium_snapshot_seconds": round(last_ts - first_ts, 1),
        "debezium_snapshot_done_after_s": round(last_ts - capture_at, 1),
        "stock_keys": result["stock_keys"],
        "projector_cpu_seconds": result["projector_cpu_seconds"],
        "projector_peak_rss_mb": result["projector_peak_rss_mb"],
        "goal_minutes_at_these_rates": {
            "seed": round(seeded.seconds * at_goal),
            "snapshot_and_project": round(total_s * at_goal),
        },
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
