"""Every benchmark in one run: figures against the goals of issue 15, JSON and PNG results.

    .venv/bin/python -m bench              # full profile: the README's figures (~1 hour)
    .venv/bin/python -m bench --quick      # smoke profile for CI (a few minutes)
    .venv/bin/python -m bench --only api,ingest

Needs the services up (`stockcdc infra up`; `infra/run-tests.sh` starts them for CI).
Measurements run one after another, never side by side (2 cores: they would measure each
other). Writes bench/results/<profile>.json, <profile>-freshness.png and
<profile>-ingest.png, prints each figure next to its goal, and exits 1 when a
measurement failed to run (a missed goal is a figure, not a failure).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import plots
from bench.common import RESULTS_DIR, Profile, machine

Run = Callable[[Profile], dict[str, Any]]

#: `bench.<name>.run`, in the order they run: the chain-level ones first, the big builds
#: last.
MEASUREMENTS: tuple[str, ...] = (
    "wms_overhead", "freshness", "projector_cpu", "ingest", "api", "initial_load",
)  # fmt: skip


def measurement(name: str) -> Run:
    """The `run` of `bench.<name>` (imported when used: a run of some needs only them)."""
    run: Run = importlib.import_module(f"bench.{name}").run
    return run


def _goals(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, goal, met) rows of the summary; met None when not comparable."""
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(name: str, value: float | None, goal: float, unit: str, higher: bool) -> None:
        if value is None:
            return
        met = value >= goal if higher else value <= goal
        sign = "≥" if higher else "≤"
        shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        rows.append((name, f"{shown} {unit}".strip(), f"{sign} {goal:,} {unit}".strip(), met))

    if r := results.get("ingest"):
        add("ingest: events/s projected", r.get("projected_events_per_s"), 25_000, "ev/s", True)
        add("ingest: projected / bare", r.get("ratio_projected_to_bare"), 0.8, "", True)
    if r := results.get("freshness"):
        overall = r.get("freshness_ms", {})
        add("freshness p50", overall.get("p50_ms"), 300, "ms", False)
        add("freshness p99", overall.get("p99_ms"), 1000, "ms", False)
        rate = r.get("workload", {}).get("achieved_ops_per_s")
        add("freshness: workload achieved", rate, 150, "ops/s", True)
    if r := results.get("projector_cpu"):
        add("projector CPU per WMS transaction", r.get("cpu_ms_per_tx"), 1, "ms", False)
        add("projector CPU: workload achieved", r.get("achieved_ops_per_s"), 100, "ops/s", True)
        add("idle demo CPU", r.get("demo_cores"), 0.15, "cores", False)
    if r := results.get("api"):
        add("API single-SKU p99", r.get("stock_one_p99_ms"), 10, "ms", False)
        add("API single-SKU requests/s", r.get("stock_one_rps"), 500, "req/s", True)
        reads = r.get("reads", {})
        for read in ("lots", "serial", "movements_sku_100"):
            p99 = reads.get(read, {}).get("sequential", {}).get("p99_ms")
            add(f"API {read} p99", p99, 50, "ms", False)
    if r := results.get("wms_overhead"):
        add("WMS throughput with / without replication", r.get("ratio"), 0.9, "", True)
    if r := results.get("initial_load"):
        add("initial load: balance rows projected", r.get("projected_balance_rows"),
            10_000_000, "rows", True)  # fmt: skip
    return rows


def _memory(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Peak RSS (MiB) of the consumer and the API under each load, from the measurements."""
    out: dict[str, float] = {}
    for name, result in results.items():
        for key, value in result.items():
            if key.endswith("peak_rss_mb") and isinstance(value, int | float):
                out[f"{name}.{key}"] = value
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="smoke profile (CI)")
    ap.add_argument("--only", default="", help=f"comma list of {', '.join(MEASUREMENTS)}")
    ap.add_argument(
        "--api-model", type=Path, default=None,
        help="api: reuse the chDB read model an earlier run built here (skips the build)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    profile = Profile("quick" if args.quick else "full")
    chosen = [m for m in args.only.split(",") if m] or list(MEASUREMENTS)
    unknown = sorted(set(chosen) - set(MEASUREMENTS))
    if unknown:
        ap.error(f"unknown measurement(s): {', '.join(unknown)}")

    out = RESULTS_DIR / f"{profile.name}.json"
    # --only refreshes those measurements in the profile's results and keeps the others
    previous = json.loads(out.read_text()) if args.only and out.exists() else {}
    results: dict[str, dict[str, Any]] = previous.get("results", {})
    failed: dict[str, str] = {}
    seconds: dict[str, float] = previous.get("seconds", {})
    for name in chosen:
        print(f"== {name} ({profile.name}) ==", flush=True)
        started = time.perf_counter()
        results.pop(name, None)
        load = round(os.getloadavg()[0], 2)  # the box is shared: say how busy it was
        run = measurement(name)
        if name == "api" and args.api_model is not None:
            from bench.api import run as api_run

            run = functools.partial(api_run, path=args.api_model)
        try:
            results[name] = run(profile) | {
                "profile": profile.name,
                "measured_at": _now(),
                "load_1m_at_start": load,
            }
        except Exception:  # reported and counted: the other measurements still run
            failed[name] = traceback.format_exc()
            print(failed[name], file=sys.stderr, flush=True)
        seconds[name] = round(time.perf_counter() - started, 1)

    pngs = {}
    if "freshness" in results:
        pngs["freshness"] = RESULTS_DIR / f"{profile.name}-freshness.png"
        plots.plot_freshness(results["freshness"], pngs["freshness"])
    if "ingest" in results:
        pngs["ingest"] = RESULTS_DIR / f"{profile.name}-ingest.png"
        plots.plot_ingest(results["ingest"], pngs["ingest"])

    goals = _goals(results)
    memory = _memory(results)
    report: dict[str, Any] = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "profile": profile.name,
        "finished_at": _now(),
        "machine": machine(),
        "seconds": seconds,
        "summary": [{"figure": f, "measured": m, "goal": g, "met": ok} for f, m, g, ok in goals],
        "memory_peak_rss_mb": memory,
        "failed": failed,
        "plots": {k: str(v.relative_to(RESULTS_DIR.parent.parent)) for k, v in pngs.items()},
        "results": results,
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    print(f"\n{'figure':45s} {'measured':>16s}  {'goal':>14s}")
    for f, m, g, ok in goals:
        print(f"{f:45s} {m:>16s}  {g:>14s}  {'met' if ok else 'MISSED'}")
    for k, v in memory.items():
        print(f"{'peak RSS ' + k:45s} {v:>13,.0f} MiB")
    for name in failed:
        print(f"FAILED: {name} (traceback above and in {out})")
    print(f"wrote {out} and {', '.join(str(p) for p in pngs.values()) or 'no plots'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
