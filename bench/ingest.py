"""Ingest benchmark: events/s projected from a Debezium backlog, against kafka-python
consuming the same backlog bare, in one run (the ratio is what the noisy machine can't blur).

    .venv/bin/python -m bench.ingest                 # ≥ 1M events (goal ≥ 25k/s, ratio ≥ 0.8)
    .venv/bin/python -m bench.ingest --quick         # smoke run for CI

The backlog is real: an isolated pipeline (own databases, connectors, topics), seeded so
the seed arrives as Debezium's initial snapshot, then a mixed workload streamed as
transactions. Each phase runs in a child process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import math
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
from simulator.workload import run as run_workload
from stockcdc.settings import Settings, get_settings

RESULTS = RESULTS_DIR / "ingest.json"
GOAL = {"events_per_s": 25_000, "ratio": 0.8}
#: No offset committed for this long fails the run (seen once on the loaded box: the
#: group stuck in a rebalance that kafka-python never completed, every commit refused).
STALL_S = 120.0
#: Debezium has written the whole backlog well within this at the full profile's size.
BACKLOG_TIMEOUT_S = 3600.0


def _end_offsets(settings: Settings) -> dict[str, int]:
    consumer = KafkaConsumer(**settings.kafka_client_config())
    try:
        tps = [TopicPartition(r.cdc_topic, 0) for r in settings.region_list()]
        return {tp.topic: int(o) for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def build_backlog(pipeline: IsolatedPipeline, size: str, ops: int) -> dict[str, int]:
    """Seed (→ snapshot), stream a workload, and wait until Debezium has written it all."""
    s = pipeline.settings
    for region in pipeline.regions:
        with psycopg.connect(s.pg_dsn(region)) as conn:
            seed_region(conn, region, seed=3, size=parse_size(size))
    pipeline.start_capture()
    if ops:
        run_workload(s, pipeline.regions, workers=3, count=ops, seed=4)
    # Debezium is done when only its idle records still arrive: per heartbeat interval
    # and region, its heartbeat and the WAL mark the heartbeat writes. The allowance
    # follows the time really passed between two readings (a loaded box stretches it).
    deadline = time.monotonic() + BACKLOG_TIMEOUT_S
    last, at, still = _end_offsets(s), time.monotonic(), 0
    while still < 3:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Debezium still writing after {BACKLOG_TIMEOUT_S:.0f} s")
        time.sleep(2.0)
        now, now_at = _end_offsets(s), time.monotonic()
        idle = 2 * math.ceil((now_at - at) * 1000 / s.heartbeat_interval_ms) + 2  # + jitter
        grown = sum(now[t] - last[t] for t in now)
        still = still + 1 if grown <= idle * len(now) else 0
        last, at = now, now_at
    return last


def _bare(settings: Settings, ends: dict[str, int], out: Any) -> None:
    """Child: kafka-python alone, with the projector's fetch settings: deserialize
    nothing, touch every record, until every partition's end."""
    consumer = KafkaConsumer(
        **settings.kafka_client_config(),
        enable_auto_commit=False,
        max_poll_records=settings.max_poll_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    tps = [TopicPartition(t, 0) for t in ends]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    count, nbytes = 0, 0
    cpu0 = time.process_time()
    started = time.perf_counter()
    positions = dict.fromkeys(ends, 0)
    while any(positions[t] < ends[t] for t in ends):
        for tp, records in consumer.poll(timeout_ms=200).items():
            for rec in records:
                count += 1
                nbytes += len(rec.value or b"")
            positions[tp.topic] = records[-1].offset + 1
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    consumer.close()
    out.put(
        {
            "events": count,
            "bytes": nbytes,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def _project(settings: Settings, control: Any, out: Any) -> None:
    """Child: the projector as `stockcdc project` runs it (`service.running`: its thread
    and GC setting) from offset 0 into a fresh embedded chDB, until told to stop; says
    when it starts and reports its CPU time, inventory row versions and peak RSS."""
    client = make_client(settings)
    migrate(client, settings.clickhouse_cluster)
    projector = Projector(settings, ProjectionWriter(client))
    cpu0 = time.process_time()
    out.put("started")
    with running(projector) as thread:
        while not control.wait(0.2):
            if not thread.is_alive():
                out.put({"error": "the projector thread died (its traceback is above)"})
                return
    cpu = time.process_time() - cpu0
    rows = client.query("SELECT count() FROM wms_inventory").result_rows[0][0]
    out.put({"cpu_seconds": cpu, "inventory_versions": int(rows), "peak_rss_mb": peak_rss_mb()})


def _committed(consumer: KafkaConsumer, ends: dict[str, int]) -> int:
    """Events of the backlog committed by the group (heartbeats after a region's end,
    which keep coming, are not counted)."""
    return sum(min(consumer.committed(TopicPartition(t, 0)) or 0, e) for t, e in ends.items())


def _projected(settings: Settings, ends: dict[str, int], timeout_s: float) -> dict[str, Any]:
    """Run `_project` in a child and watch the group's committed offsets from here (not
    in the projector's process: its GIL is what is measured) until they reach `ends`."""
    ctx = mp.get_context("spawn")
    control, out = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_project, args=(settings, control, out))
    child.start()
    watch = KafkaConsumer(
        **settings.kafka_client_config(),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    total = sum(ends.values())
    try:
        if out.get(timeout=300) != "started":
            raise RuntimeError("the projector child did not start")
        started = time.perf_counter()
        timeline: list[tuple[float, int]] = [(0.0, 0)]
        progressed = 0.0  # when the committed count last grew
        while timeline[-1][1] < total:
            time.sleep(0.25)
            now = time.perf_counter() - started
            stalled = now - progressed > STALL_S
            if not out.empty() or not child.is_alive() or now > timeout_s or stalled:
                why = out.get() if not out.empty() else f"alive: {child.is_alive()}"
                raise RuntimeError(
                    f"projector stopped short of the backlog's end ({timeline[-1][1]} of"
                    f" {total} committed, {now - progressed:.0f} s without progress): {why}"
                )
            timeline.append((now, _committed(watch, ends)))
            if timeline[-1][1] > timeline[-2][1]:
                progressed = now
        seconds = timeline[-1][0]
        control.set()
        result: dict[str, Any] = out.get(timeout=120)
    finally:
        watch.close()
        control.set()
        child.join(60)
        if child.is_alive():
            child.terminate()
    if "error" in result:
        raise RuntimeError(result["error"])
    return {**result, "seconds": seconds, "timeline": timeline}


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result: dict[str, Any] = q.get()
    p.join()
    return result


def run(profile: Profile, size: str | None = None, ops: int | None = None) -> dict[str, Any]:
    """Build the backlog, consume it bare, project it, consume it bare again: events/s of
    both and their ratio (bare: the mean of the two runs around the projection, so a
    change of the shared machine's load weighs on both), the projector's progress over
    time, CPU seconds and peak RSS of each."""
    size = size or profile.pick("2k", "120k")
    ops = ops if ops is not None else profile.pick(200, 3000)
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        pipeline = IsolatedPipeline(base, Path(tmp))
        try:
            t0 = time.perf_counter()
            ends = build_backlog(pipeline, size, ops)
            backlog_s = time.perf_counter() - t0
            s = pipeline.settings
            bare = [_in_child(_bare, s, ends)]
            proj = _projected(s, ends, timeout_s=profile.pick(600.0, 1800.0))
            bare.append(_in_child(_bare, s, ends))
        finally:
            pipeline.close()
    events = sum(ends.values())
    bare_s = sum(b["seconds"] for b in bare) / len(bare)
    return {
        "method": (
            "A real Debezium backlog on an isolated pipeline (seed as snapshot, then a mixed"
            " workload streamed) consumed from offset 0 by kafka-python alone, by the"
            " projector into a fresh embedded chDB until every offset is committed, and by"
            " kafka-python alone again; each in a child process, watched from the parent."
        ),
        "goal": GOAL,
        "profile": profile.name,
        "seed_size_per_region": size,
        "workload_ops_per_region": ops,
        "backlog_events": events,
        "backlog_build_seconds": round(backlog_s, 1),
        "bare_kafka_python_events_per_s": round(events / bare_s),
        "projected_events_per_s": round(events / proj["seconds"]),
        "ratio_projected_to_bare": round(bare_s / proj["seconds"], 3),
        "bare_seconds": [round(b["seconds"], 2) for b in bare],
        "projected_seconds": round(proj["seconds"], 2),
        "bare_cpu_seconds": [round(b["cpu_seconds"], 2) for b in bare],
        "projector_cpu_seconds": round(proj["cpu_seconds"], 2),
        "inventory_versions": proj["inventory_versions"],
        "bare_peak_rss_mb": round(max(b["peak_rss_mb"] for b in bare)),
        "projector_peak_rss_mb": round(proj["peak_rss_mb"]),
        "machine": machine(),
        "plots": {"ingest_timeline": [(round(t, 2), n) for t, n in proj["timeline"]]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default=None, help="balance rows per region to seed")
    parser.add_argument("--ops", type=int, default=None, help="workload operations per region")
    parser.add_argument("--quick", action="store_true", help="small smoke run (CI)")
    args = parser.parse_args()
    result = run(Profile("quick" if args.quick else "full"), args.size, args.ops)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "plots"}, indent=2))


if __name__ == "__main__":
    main()
