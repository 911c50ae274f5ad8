"""Projector CPU: what `stockcdc project` costs per WMS transaction under a steady
workload, and what an idle `stockcdc demo` costs, in CPU.

    .venv/bin/python -m bench.projector_cpu            # 60 s windows
    .venv/bin/python -m bench.projector_cpu --quick    # CI smoke run (10 s windows)

Projector (goal ≤ 1 ms per transaction at 100 WMS ops/s over three regions): an isolated
pipeline (own databases, connectors, topics, chDB path) is seeded, captured and projected
by `stockcdc project` (the projector alone, no API) in a child process, while the
simulator runs in another child at the target rate. Once the projector is caught up and
warmed up, its CPU time (user + system, /proc) over a window divided by the transactions
it applied in it (`stockcdc_transactions_total`) is the cost of one transaction.

Idle demo (goal ≤ 0.15 core): `stockcdc demo --keep-services` as a user runs it, on
another isolated pipeline seeded as the demo seeds its first run, its API on a free port:
simulated warehouses at the demo's default rate per region, the projector and the API in
one process. Once caught up, its CPU (process and children) over a window, in cores.
Writes bench/results/projector_cpu.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.common import RESULTS_DIR, Profile, machine, peak_rss_mb
from bench.live import (
    PROJECTOR_METRICS,
    DemoProcess,
    ProjectProcess,
    ServeProcess,
    WorkloadProcess,
    achieved_ops_per_s,
    cpu_seconds,
    insert_shares,
    machine_busy,
    projector_activity,
    tree_cpu_seconds,
)
from infra.pipeline import IsolatedPipeline
from simulator.db import connect
from simulator.seed import parse_size, seed_region
from stockcdc.demo import seed_if_empty
from stockcdc.settings import get_settings

NAME = "projector_cpu"
GOAL: dict[str, float] = {"cpu_ms_per_tx": 1.0, "ops_per_s": 100, "demo_cores": 0.15}
#: Caught up: every region's latest applied source time at most this old.
MAX_LAG_S = 2.0


@dataclass(frozen=True, slots=True)
class Sizes:
    """What one profile runs."""

    seed_size: str  # balance rows per region of the projector's pipeline
    ops_per_s: float  # projector's workload target, all regions together
    workers: int  # per region
    warmup_s: float  # after catching up, before the window
    window_s: float  # CPU and transactions counted over this long


def sizes(profile: Profile) -> Sizes:
    """The quick (CI) or full (goal) sizes: the same rate, shorter windows."""
    return Sizes(
        seed_size=profile.pick("5k", "20k"),
        ops_per_s=GOAL["ops_per_s"],
        workers=2,
        warmup_s=profile.pick(3.0, 10.0),
        window_s=profile.pick(10.0, 60.0),
    )


def demo_rate() -> float:
    """`stockcdc demo`'s default `--rate` (operations/s per region): the idle workload."""
    from stockcdc.cli import demo

    option = inspect.signature(demo).parameters["rate"].default
    return float(option.default)


def _window(proc: ServeProcess, seconds: float, cpu: Callable[[int], float]) -> dict[str, Any]:
    """CPU seconds (`cpu` of the process), the projector's counters and the machine's busy
    share over `seconds`; nothing of the bench polls the process in between."""
    before, inserts = proc.metrics(PROJECTOR_METRICS), proc.insert_seconds()
    busy0, total0 = machine_busy()
    cpu0, t0 = cpu(proc.pid), time.perf_counter()
    time.sleep(seconds)
    cpu1, t1 = cpu(proc.pid), time.perf_counter()
    busy1, total1 = machine_busy()
    after = proc.metrics(PROJECTOR_METRICS)
    elapsed, cpu_s = t1 - t0, cpu1 - cpu0
    transactions = int(after["stockcdc_transactions_total"] - before["stockcdc_transactions_total"])
    return {
        "seconds": round(elapsed, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_cores": round(cpu_s / elapsed, 3),
        "transactions": transactions,
        "cpu_ms_per_tx": round(1000 * cpu_s / transactions, 3) if transactions else None,
        "machine_cpu_busy": round((busy1 - busy0) / max(1.0, total1 - total0), 3),
        "projector": projector_activity(before, after, elapsed),
        "insert_share_by_table": insert_shares(inserts, proc.insert_seconds(), elapsed),
    }


def _isolated(
    prefix: str, measure: Callable[[IsolatedPipeline, Path], dict[str, Any]]
) -> dict[str, Any]:
    """`measure` on a fresh isolated pipeline, removed afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        pipeline = IsolatedPipeline(get_settings(), Path(tmp))
        try:
            return measure(pipeline, Path(tmp))
        finally:
            pipeline.close()


def measure_projector(pipeline: IsolatedPipeline, sz: Sizes, tmp: Path) -> dict[str, Any]:
    """Seed, capture, `stockcdc project`; the workload at the target rate; CPU per
    transaction over the window once caught up."""
    s = pipeline.settings
    for region in pipeline.regions:
        with connect(s, region) as conn:
            seed_region(conn, region, seed=7, size=parse_size(sz.seed_size))
    pipeline.start_capture()
    regions = len(pipeline.regions)
    workload = WorkloadProcess(s, sz.ops_per_s, sz.workers)
    with ProjectProcess(s, tmp / "project.log") as project:
        snapshot_s = project.wait_caught_up(regions, MAX_LAG_S)
        workload.start()
        try:
            time.sleep(2.0)  # the workload's threads are up and paced
            caught_up_s = project.wait_caught_up(regions, MAX_LAG_S)
            time.sleep(sz.warmup_s)
            window = _window(project, sz.window_s, cpu_seconds)
            lag_at_end = project.lag_s()
        finally:
            report = workload.stop()
        rss = peak_rss_mb(project.pid)
    if "error" in report:
        raise RuntimeError(f"workload failed: {report['error']}")
    if not window["transactions"]:
        raise RuntimeError(f"the projector applied no transaction in the window: {window}")
    return {
        "snapshot_projected_s": round(snapshot_s, 1),
        "caught_up_under_load_s": round(caught_up_s, 1),
        "workload": {
            "target_ops_per_s": sz.ops_per_s,
            "achieved_ops_per_s": round(achieved_ops_per_s(report), 1),
            "workers_per_region": sz.workers,
            "errors": sum(r["errors"] for r in report["regions"]),
        },
        "window": window,
        "lag_s_at_end": lag_at_end,
        # behind at the end: it drew larger batches than a caught-up projector would
        "kept_up": max(lag_at_end.values()) <= MAX_LAG_S,
        "project_peak_rss_mb": rss,
    }


def measure_demo(pipeline: IsolatedPipeline, sz: Sizes, tmp: Path) -> dict[str, Any]:
    """`stockcdc demo` on the pipeline, seeded as its first run seeds; its cores over the
    window once caught up."""
    s = pipeline.settings
    seed_if_empty(s, Console(quiet=True))  # the demo's own seed; it then finds it seeded
    pipeline.start_capture()
    with DemoProcess(s, tmp / "demo.log") as demo:
        caught_up_s = demo.wait_caught_up(len(pipeline.regions), MAX_LAG_S)
        time.sleep(sz.warmup_s)
        window = _window(demo, sz.window_s, tree_cpu_seconds)
        lag_at_end = demo.lag_s()
        rss = peak_rss_mb(demo.pid)
    return {
        "rate_per_region": demo_rate(),
        "caught_up_s": round(caught_up_s, 1),
        "window": window,
        "lag_s_at_end": lag_at_end,
        "kept_up": max(lag_at_end.values()) <= MAX_LAG_S,
        "demo_peak_rss_mb": rss,
    }


def run(profile: Profile, sz: Sizes | None = None) -> dict[str, Any]:
    """Both measurements, one after the other, each on its own isolated pipeline (`sz`
    overrides the profile's sizes)."""
    sz = sz or sizes(profile)
    load_at_start = os.getloadavg()[0]
    projector = _isolated("bench-projector-cpu-", lambda p, tmp: measure_projector(p, sz, tmp))
    ms_per_tx = projector["window"]["cpu_ms_per_tx"]
    ops = projector["workload"]["achieved_ops_per_s"]
    print(
        f"projector: {ms_per_tx:.3f} ms CPU per WMS transaction (goal ≤ {GOAL['cpu_ms_per_tx']:g})"
        f" at {ops:.0f} ops/s (goal ≥ {GOAL['ops_per_s']:g}),"
        f" {projector['window']['cpu_cores']:.2f} cores,"
        f" {'kept up' if projector['kept_up'] else 'fell behind'},"
        f" machine {100 * projector['window']['machine_cpu_busy']:.0f}% busy",
        flush=True,
    )
    demo = _isolated("bench-demo-cpu-", lambda p, tmp: measure_demo(p, sz, tmp))
    cores = demo["window"]["cpu_cores"]
    print(
        f"idle demo: {cores:.3f} cores (goal ≤ {GOAL['demo_cores']:g})"
        f" at {demo['rate_per_region']:g} ops/s per region,"
        f" machine {100 * demo['window']['machine_cpu_busy']:.0f}% busy",
        flush=True,
    )
    return {
        "name": NAME,
        "profile": profile.name,
        "method": _method(sz),
        "goal": GOAL,
        "machine": machine(),
        "machine_load_1m_at_start": round(load_at_start, 2),
        "sizes": asdict(sz),
        "cpu_ms_per_tx": ms_per_tx,
        "achieved_ops_per_s": ops,
        "demo_cores": cores,
        "projector": {k: v for k, v in projector.items() if k != "project_peak_rss_mb"},
        "demo": {k: v for k, v in demo.items() if k != "demo_peak_rss_mb"},
        "project_peak_rss_mb": projector["project_peak_rss_mb"],
        "demo_peak_rss_mb": demo["demo_peak_rss_mb"],
        "met": {
            "cpu_ms_per_tx": ms_per_tx <= GOAL["cpu_ms_per_tx"],
            "ops_per_s": ops >= GOAL["ops_per_s"],
            "demo_cores": cores <= GOAL["demo_cores"],
        },
    }


def _method(sz: Sizes) -> str:
    """The "method" sentences of the result, from the sizes run."""
    return (
        "Projector: `stockcdc project` (no API) in a child process over an isolated pipeline "
        f"({sz.seed_size} balance rows per region), the simulator's mixed workload at "
        f"{sz.ops_per_s:g} ops/s (target) over three regions in another; after catching up "
        f"and {sz.warmup_s:g} s of warm-up, the process's CPU time (user + system, /proc) "
        f"over {sz.window_s:g} s divided by the transactions it applied "
        "(stockcdc_transactions_total). Idle demo: `stockcdc demo --keep-services` on its "
        "own isolated pipeline (seeded as its first run seeds), its default rate per "
        f"region; after catching up and {sz.warmup_s:g} s, its CPU time (process and "
        f"children) over {sz.window_s:g} s, in cores. Connect, Kafka and PostgreSQL are "
        "not counted in either."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (CI)")
    parser.add_argument("--ops-per-s", type=float, help="projector's workload, all regions")
    parser.add_argument("--seconds", type=float, help="length of each measured window")
    args = parser.parse_args()
    profile = Profile("quick" if args.quick else "full")
    sz = sizes(profile)
    sz = replace(sz, ops_per_s=args.ops_per_s or sz.ops_per_s, window_s=args.seconds or sz.window_s)
    result = run(profile, sz)
    out = RESULTS_DIR / f"{NAME}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
