"""Freshness benchmark: time from a WMS commit to its visibility through the Query API,
under a sustained mixed workload in three regions, everything on this machine.

    .venv/bin/python -m bench.freshness            # 150 ops/s target, ≥ 300 samples
    .venv/bin/python -m bench.freshness --quick    # CI smoke run (~100 ops/s, ~20 s)

An isolated pipeline (own databases, connectors, topics, chDB path) is seeded, captured
and served by `stockcdc serve` in one child process (projector + API, embedded mode). The
simulator runs in another child at the target rate. A probe commits, in each region in
turn, a cycle count (±1) on its own SKU, as the WMS does it, and polls the API until the
key's `last_movement_at` reaches the probe's transaction: that wait is one freshness
sample. Goal (issue 15): p50 ≤ 300 ms, p99 ≤ 1 s at ≥ 150 WMS ops/s over three regions.
Writes bench/results/freshness.json (and .png).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    RESULTS_DIR,
    Profile,
    latency_summary,
    machine,
    peak_rss_mb,
)
from bench.live import (
    PROJECTOR_METRICS,
    ServeProcess,
    WorkloadProcess,
    achieved_ops_per_s,
    cpu_seconds,
    machine_busy,
    projector_activity,
)
from infra.pipeline import IsolatedPipeline
from query_api.client import QueryApiError, QueryClient
from simulator import ops
from simulator.db import Conn, connect, run_txn
from simulator.errors import Rejected
from simulator.seed import parse_size, seed_region
from stockcdc.settings import Region, Settings, get_settings

NAME = "freshness"
GOAL: dict[str, float] = {"p50_ms": 300, "p99_ms": 1000, "ops_per_s": 150, "samples": 300}

PROBE_OWNER = "PROBE-FRESHNESS"
PROBE_SKU = "PROBE-0001"
PROBE_STOCK = 1000
PROBE_OPERATOR = "freshness-probe"


@dataclass(frozen=True, slots=True)
class Sizes:
    """What one profile runs."""

    seed_size: str  # balance rows per region
    ops_per_s: float  # workload target, all regions together
    workers: int  # per region
    min_seconds: float  # probing lasts at least this long ...
    min_samples: int  # ... and until this many samples
    max_seconds: float  # ... but no longer than this
    sample_timeout_s: float  # a sample not visible by then counts as this (a lower bound)
    poll_ms: float = 5.0  # between the probe's requests


def sizes(profile: Profile) -> Sizes:
    """The quick (CI) or full (goal) sizes."""
    return Sizes(
        seed_size=profile.pick("5k", "20k"),
        ops_per_s=profile.pick(100.0, GOAL["ops_per_s"]),
        workers=profile.pick(2, 6),
        min_seconds=profile.pick(20.0, 90.0),
        min_samples=profile.pick(30, int(GOAL["samples"])),
        max_seconds=profile.pick(30.0, 240.0),
        sample_timeout_s=profile.pick(15.0, 30.0),
    )


# --------------------------------------------------------------------------- the probe


@dataclass(frozen=True, slots=True)
class ProbeKey:
    """The probe's stock key in one region: a SKU of its own owner, stock in one warehouse."""

    region: Region
    warehouse_id: int
    warehouse_code: str
    sku_id: int


def prepare_probe(settings: Settings, region: Region) -> ProbeKey:
    """Master data and opening stock of the probe SKU, made as the WMS makes them: owner
    and SKU, an inbound order, its receipt and putaway (one transaction each)."""
    with connect(settings, region) as conn:
        row = conn.execute("SELECT id, code FROM warehouse ORDER BY id LIMIT 1").fetchone()
        assert row is not None, "seed the region first"
        wid, wcode = int(row[0]), str(row[1])

        def location(loc_type: str) -> int:
            loc = conn.execute(
                "SELECT id FROM location WHERE warehouse_id = %s AND loc_type = %s "
                "AND active ORDER BY id LIMIT 1",
                (wid, loc_type),
            ).fetchone()
            assert loc is not None, f"no {loc_type} location in {wcode}"
            return int(loc[0])

        def master(cur: ops.Cur) -> int:
            cur.execute(
                "INSERT INTO owner (code, name) VALUES (%s, 'Freshness probe') RETURNING id",
                (PROBE_OWNER,),
            )
            owner = cur.fetchone()
            assert owner is not None
            return ops.create_sku(
                cur, owner_id=int(owner[0]), sku_code=PROBE_SKU, name="Freshness probe"
            )

        sku_id = run_txn(conn, master)
        owner_id = conn.execute("SELECT owner_id FROM sku WHERE id = %s", (sku_id,)).fetchone()
        assert owner_id is not None
        order_id = run_txn(
            conn,
            lambda cur: ops.create_inbound(
                cur,
                warehouse_id=wid,
                owner_id=int(owner_id[0]),
                order_no=f"PROBE-{uuid.uuid4().hex[:8].upper()}",
                lines=[ops.InboundLineSpec(sku_id, PROBE_STOCK)],
                status="ARRIVED",
            ),
        )
        line = conn.execute(
            "SELECT id FROM inbound_line WHERE inbound_order_id = %s", (order_id,)
        ).fetchone()
        assert line is not None
        received = run_txn(
            conn,
            lambda cur: ops.receive(
                cur,
                line_id=int(line[0]),
                qty=PROBE_STOCK,
                location_id=location("RECEIVING"),
                operator=PROBE_OPERATOR,
            ),
        )
        run_txn(
            conn,
            lambda cur: ops.putaway(
                cur,
                inventory_id=received[0],
                qty=PROBE_STOCK,
                to_location_id=location("STORAGE"),
                operator=PROBE_OPERATOR,
            ),
        )
    return ProbeKey(region, wid, wcode, sku_id)


def _cycle_count(cur: ops.Cur, key: ProbeKey, up: bool) -> datetime:
    """One probe transaction: count the probe's stored row one unit up or down (COUNT in
    the ledger, as OPERATIONS.md has it). Returns the transaction's time, which becomes
    the ledger row's occurred_at and so the key's last_movement_at."""
    cur.execute("SELECT now()")
    now = cur.fetchone()
    assert now is not None
    cur.execute(
        "SELECT i.id, i.qty_on_hand - i.qty_allocated FROM inventory i "
        "JOIN location l ON l.id = i.location_id WHERE i.sku_id = %s AND i.warehouse_id = %s "
        "AND i.status = 'AVAILABLE' AND l.loc_type IN ('STORAGE', 'PICK') "
        "ORDER BY i.qty_on_hand DESC, i.id LIMIT 1",
        (key.sku_id, key.warehouse_id),
    )
    row = cur.fetchone()
    if row is None:
        raise Rejected("no stored probe stock")
    delta = 1 if up or row[1] < 1 else -1
    ops.adjust(cur, inventory_id=row[0], delta=delta, operator=PROBE_OPERATOR, counted=True)
    stamp: datetime = now[0]
    return stamp


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


@dataclass
class ProbeRun:
    """What the probe measured in one region."""

    key: ProbeKey
    freshness_ms: list[float] = field(default_factory=list)
    commit_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    poll_errors: int = 0
    timeouts: int = 0
    rejected: int = 0
    later_seen: int = 0  # the first answer showing it already had a later movement


def probe_loop(
    settings: Settings,
    runs: list[ProbeRun],
    base_url: str,
    api_key: str,
    stop: threading.Event,
    poll_s: float = 0.005,
    timeout_s: float = 30.0,
) -> None:
    """The regions in turn, one sample in flight at a time (the polling must not become
    the API's main load): commit, poll until visible, pause a random 50-250 ms (no
    lock-step with the projector's batches); until `stop`."""
    rng = random.Random(17)
    conns = {r.key.region.name: connect(settings, r.key.region) for r in runs}
    try:
        with QueryClient(base_url, api_key, timeout=10.0) as api:
            for i in itertools.count():
                if stop.wait(rng.uniform(0.05, 0.25)):
                    return
                run = runs[i % len(runs)]
                up = (i // len(runs)) % 2 == 0  # +1, then -1: the probe's stock stays put
                _one_sample(conns[run.key.region.name], api, run, up, poll_s, timeout_s)
    finally:
        for conn in conns.values():
            conn.close()


def _one_sample(
    conn: Conn, api: QueryClient, run: ProbeRun, up: bool, poll_s: float, timeout_s: float
) -> None:
    key = run.key
    started = time.perf_counter()
    try:
        stamp = _utc(run_txn(conn, lambda cur: _cycle_count(cur, key, up)))
    except Rejected:
        run.rejected += 1
        return
    committed = time.perf_counter()
    run.commit_ms.append(1000 * (committed - started))
    while True:
        asked = time.perf_counter()
        try:
            seen = api.stock(PROBE_OWNER, key.warehouse_code, PROBE_SKU).last_movement_at
        except (QueryApiError, httpx.HTTPError):
            run.poll_errors += 1
            seen = None
        answered = time.perf_counter()
        run.poll_ms.append(1000 * (answered - asked))
        if seen is not None and _utc(seen) >= stamp:
            run.freshness_ms.append(1000 * (answered - committed))
            run.later_seen += _utc(seen) > stamp
            return
        if answered - committed > timeout_s:  # counted as a lower bound
            run.freshness_ms.append(1000 * (answered - committed))
            run.timeouts += 1
            return
        time.sleep(poll_s)


def wait_visible(base_url: str, api_key: str, keys: list[ProbeKey], timeout_s: float) -> None:
    """Until every probe key answers: the region's initial snapshot is projected (it
    becomes visible whole)."""
    deadline = time.monotonic() + timeout_s
    with QueryClient(base_url, api_key, timeout=10.0) as api:
        for key in keys:
            while True:
                try:
                    api.stock(PROBE_OWNER, key.warehouse_code, PROBE_SKU)
                    break
                except (QueryApiError, httpx.HTTPError):
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{key.region.name}: snapshot not projected in {timeout_s:.0f}s"
                        ) from None
                    time.sleep(0.5)


# --------------------------------------------------------------------------- the run


def run(profile: Profile, sz: Sizes | None = None) -> dict[str, Any]:
    """Seed, capture, serve, run the workload, probe; the figures and raw samples
    (`sz` overrides the profile's sizes)."""
    sz = sz or sizes(profile)
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
        pipeline = IsolatedPipeline(get_settings(), Path(tmp))
        try:
            result = _measure(pipeline, sz, Path(tmp))
        finally:
            pipeline.close()
    return {"name": NAME, "profile": profile.name, **result}


def _measure(pipeline: IsolatedPipeline, sz: Sizes, tmp: Path) -> dict[str, Any]:
    s = pipeline.settings
    load_at_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    for region in pipeline.regions:
        with connect(s, region) as conn:
            seed_region(conn, region, seed=7, size=parse_size(sz.seed_size))
    keys = [prepare_probe(s, region) for region in pipeline.regions]
    pipeline.start_capture()
    seeded_s = time.perf_counter() - t0

    runs = [ProbeRun(k) for k in keys]
    with ServeProcess(s, tmp / "serve.log") as serve:
        t1 = time.perf_counter()
        wait_visible(serve.base_url, serve.api_key, keys, timeout_s=300)
        snapshot_s = time.perf_counter() - t1
        child = WorkloadProcess(s, sz.ops_per_s, sz.workers)
        child.start()
        try:
            time.sleep(2.0)  # the workload's threads are up and paced
            busy0, total0 = machine_busy()
            serve_cpu0 = cpu_seconds(serve.pid)
            metrics0 = serve.metrics(PROJECTOR_METRICS)
            probe_s = _probe(s, sz, runs, serve, child)
            busy1, total1 = machine_busy()
            serve_cpu = cpu_seconds(serve.pid) - serve_cpu0
            metrics = serve.metrics(PROJECTOR_METRICS)
            lag_at_end = _lags(serve)
        finally:
            workload = child.stop()
        serve_rss = peak_rss_mb(serve.pid)
    if "error" in workload:
        raise RuntimeError(f"workload failed: {workload['error']}")
    return _report(
        sz,
        runs,
        workload,
        {
            "seed_and_probe_setup_s": round(seeded_s, 1),
            "snapshot_projected_s": round(snapshot_s, 1),
            "probe_seconds": round(probe_s, 1),
            "serve_peak_rss_mb": serve_rss,
            "serve_cpu_cores": round(serve_cpu / probe_s, 2),
            "machine_cpu_busy": round((busy1 - busy0) / max(1.0, total1 - total0), 3),
            "machine_load_1m_at_start": round(load_at_start, 2),
            "projector": {
                **projector_activity(metrics0, metrics, probe_s),
                "lag_ms_at_end": lag_at_end,
            },
        },
    )


def _probe(
    settings: Settings,
    sz: Sizes,
    runs: list[ProbeRun],
    serve: ServeProcess,
    workload: WorkloadProcess,
) -> float:
    """Run the probe for the profile's time and sample count; returns how long it ran."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            probe_loop(
                settings,
                runs,
                serve.base_url,
                serve.api_key,
                stop,
                sz.poll_ms / 1000,
                sz.sample_timeout_s,
            )
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="probe", daemon=True)
    started = time.perf_counter()
    thread.start()
    while thread.is_alive() and workload.is_alive():
        time.sleep(0.5)
        elapsed = time.perf_counter() - started
        samples = sum(len(r.freshness_ms) for r in runs)
        if elapsed >= sz.max_seconds or (elapsed >= sz.min_seconds and samples >= sz.min_samples):
            break
    stop.set()
    thread.join(sz.sample_timeout_s + 10)
    if failure:
        raise RuntimeError("the probe failed") from failure[0]
    return time.perf_counter() - started


def _lags(serve: ServeProcess) -> dict[str, int | None]:
    """Each region's projection lag (ms) as the API reports it now."""
    with QueryClient(serve.base_url, serve.api_key, timeout=10.0) as api:
        return {r.region: r.lag_ms for r in api.freshness().regions}


def _method(sz: Sizes) -> str:
    """The "method" sentences of the result, from the sizes run."""
    return (
        "A probe commits a cycle count (±1, COUNT in the ledger) on a dedicated SKU in each "
        "region in turn (one sample in flight) and polls GET /v1/stock/{owner}/{warehouse}/"
        f"{{sku}} on a keep-alive client, {sz.poll_ms:g} ms between an answer and the next "
        "request, until last_movement_at reaches the probe transaction's time; a sample is "
        f"the time from COMMIT returning to that answer arriving ({sz.sample_timeout_s:g} s "
        "if never, a lower bound). Meanwhile the simulator's mixed workload runs at "
        f"{sz.ops_per_s:g} ops/s (target) over three regions and `stockcdc serve` (projector "
        "+ API, embedded chDB) runs in one child process, all on this machine."
    )


def _report(
    sz: Sizes, runs: list[ProbeRun], workload: dict[str, Any], measured: dict[str, Any]
) -> dict[str, Any]:
    samples = [ms for r in runs for ms in r.freshness_ms]
    overall = latency_summary(samples)
    regions = {r["region"]: r for r in workload["regions"]}
    achieved = achieved_ops_per_s(workload)
    return {
        "method": _method(sz),
        "goal": GOAL,
        "machine": machine(),
        "sizes": asdict(sz),
        **{k: v for k, v in measured.items() if k != "serve_peak_rss_mb"},
        "workload": {
            "target_ops_per_s": sz.ops_per_s,
            "achieved_ops_per_s": round(achieved, 1),
            "workers_per_region": sz.workers,
            "cpu_s": round(workload["cpu_s"], 1),
            "by_region": {
                name: {
                    "target_ops_per_s": r["target_rate"],
                    "achieved_ops_per_s": r["achieved_rate"],
                    "applied": r["applied"],
                    "errors": r["errors"],
                    "wms_txn_latency_ms": r["latency_ms"],
                }
                for name, r in regions.items()
            },
        },
        "freshness_ms": overall,
        "freshness_ms_by_region": {
            r.key.region.name: latency_summary(r.freshness_ms) for r in runs
        },
        "probe": {
            "samples": len(samples),
            "timeouts": sum(r.timeouts for r in runs),
            "rejected": sum(r.rejected for r in runs),
            "later_movement_seen": sum(r.later_seen for r in runs),
            "commit_ms": latency_summary([ms for r in runs for ms in r.commit_ms]),
            "poll_ms": latency_summary([ms for r in runs for ms in r.poll_ms]),
            "poll_errors": sum(r.poll_errors for r in runs),
        },
        "serve_peak_rss_mb": measured["serve_peak_rss_mb"],
        "met": {
            "p50": overall["p50_ms"] <= GOAL["p50_ms"],
            "p99": overall["p99_ms"] <= GOAL["p99_ms"],
            "ops_per_s": achieved >= GOAL["ops_per_s"],
            "samples": len(samples) >= GOAL["samples"],
        },
        "plots": {"freshness_ms": [round(ms, 2) for ms in samples]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (CI)")
    parser.add_argument("--ops-per-s", type=float, help="workload target, all regions")
    parser.add_argument("--seconds", type=float, help="probe at least this long")
    parser.add_argument("--seed-size", help="balance rows per region, e.g. 20k")
    parser.add_argument("--poll-ms", type=float, help="pause between the probe's requests")
    args = parser.parse_args()
    profile = Profile("quick" if args.quick else "full")
    sz = sizes(profile)
    sz = replace(
        sz,
        ops_per_s=args.ops_per_s or sz.ops_per_s,
        min_seconds=args.seconds or sz.min_seconds,
        max_seconds=max(sz.max_seconds, args.seconds or 0),
        seed_size=args.seed_size or sz.seed_size,
        poll_ms=args.poll_ms or sz.poll_ms,
    )
    result = run(profile, sz)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    from bench.plots import plot_freshness

    plot_freshness(result, RESULTS_DIR / f"{NAME}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "plots"}, indent=2))


if __name__ == "__main__":
    main()
