"""Read-path latency on a chDB read model with millions of balance rows.

    .venv/bin/python -m bench.read_latency --rows 10000000     # the product's figure
    .venv/bin/python -m bench.read_latency --quick             # CI smoke (300k rows)

Builds a read model in a temporary directory (`bench.synth`: bulk rows generated inside
ClickHouse through the `wms_*` tables and their materialized views, then real
transactions and a half-written batch through `ProjectionWriter`), checks on sampled
keys that the fast reads (`read_model.queries`) give the reference's answers
(`read_model.reference`), then measures sequential requests from one process:
p50/p95/p99 and requests/s per read, for the reference ("before", few requests: it
takes seconds each at 10M rows) and the fast path ("after"). Prints a table and writes
bench/results/read_latency.json. The machine is shared and noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from bench import synth
from read_model import queries, reference
from read_model.client import make_client
from read_model.migrate import migrate
from stockcdc.settings import Settings

RESULTS = Path(__file__).parent / "results" / "read_latency.json"

Key = tuple[str, str, str]  # owner, warehouse, sku codes
Read = Callable[[Client, random.Random], object]


@dataclass(frozen=True, slots=True)
class Picker:
    """Random existing keys of the synthetic model (no database round trip)."""

    shape: synth.Shape

    def sku_key(self, rnd: random.Random) -> tuple[int, Key]:
        ri = rnd.randrange(len(synth.REGIONS))
        o = rnd.randrange(self.shape.owners)
        s = rnd.randrange(self.shape.skus_per_owner)
        w = rnd.randrange(1, synth.WAREHOUSES + 1)
        return ri, (synth.owner_code(o), synth.warehouse_code(ri, w), synth.sku_code(s))

    def serial(self, rnd: random.Random) -> tuple[str, str, str]:
        """(owner, sku, serial_no) of a serial that exists (some in two regions)."""
        sh = self.shape
        ri = rnd.randrange(len(synth.REGIONS))
        number = rnd.randrange(sh.rows)
        number -= (number % sh.skus) % 10  # a serial-tracked SKU's balance row
        sku = number % sh.skus
        owner = synth.owner_code(sku // sh.skus_per_owner)
        code = synth.sku_code(sku % sh.skus_per_owner)
        serial = f"SN-X-{number}" if number % 500 == 0 else f"SN-{ri}-{number}"
        return owner, code, serial


def reads(impl: Any, pick: Picker) -> dict[str, Read]:
    """The five measured reads, each drawing its own random key."""

    def stock(c: Client, rnd: random.Random) -> object:
        return impl.stock_one(c, *pick.sku_key(rnd)[1])

    def page(c: Client, rnd: random.Random) -> object:
        return impl.stock_page(c, pick.sku_key(rnd)[1][0], limit=100)

    def lots(c: Client, rnd: random.Random) -> object:
        return impl.lots(c, *pick.sku_key(rnd)[1])

    def serial(c: Client, rnd: random.Random) -> object:
        return impl.serial_current(c, *pick.serial(rnd))

    def moves(c: Client, rnd: random.Random) -> object:
        owner, _, sku = pick.sku_key(rnd)[1]
        return impl.movements(c, owner, sku=sku, limit=100)

    return {
        "stock_one": stock,
        "stock_page_owner_100": page,
        "lots": lots,
        "serial_current": serial,
        "movements_sku_100": moves,
    }


def measure(client: Client, read: Read, n: int, seed: int) -> dict[str, float]:
    """n sequential requests: latency percentiles (ms) and requests/s."""
    rnd = random.Random(seed)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        read(client, rnd)
        times.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - start
    times.sort()

    def pct(p: float) -> float:
        return round(times[min(len(times) - 1, int(p * len(times)))], 2)

    return {
        "n": n,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(times[-1], 2),
        "rps": round(n / total, 1),
    }


def verify(client: Client, pick: Picker, samples: int, seed: int) -> dict[str, int]:
    """Mismatches between fast and reference answers on the same random keys."""
    fast, ref = reads(queries, pick), reads(reference, pick)
    out: dict[str, int] = {}
    for name in fast:
        bad = 0
        for i in range(samples):
            a = fast[name](client, random.Random(seed + i))
            b = ref[name](client, random.Random(seed + i))
            bad += a != b
        out[name] = bad
    return out


def wait_for_merges(client: Client, timeout_s: float = 120) -> None:
    """Let the background merges the bulk load started finish (they'd skew timings)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not client.query("SELECT count() FROM system.merges").result_rows[0][0]:
            return
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rows", type=int, default=10_000_000, help="base balance rows, total")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 300k rows, few requests")
    ap.add_argument("--requests", type=int, default=None, help="per read, fast path")
    ap.add_argument("--before-requests", type=int, default=None, help="per read, reference")
    ap.add_argument("--verify", type=int, default=None, help="sampled keys compared per read")
    ap.add_argument("--path", type=Path, default=None, help="chDB dir (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rows = 300_000 if args.quick else args.rows
    n_after = args.requests or (50 if args.quick else 500)
    n_before = args.before_requests if args.before_requests is not None else (
        10 if args.quick else 3
    )  # fmt: skip
    n_verify = args.verify if args.verify is not None else (10 if args.quick else 3)

    tmp = None
    path = args.path
    if path is None:
        tmp = tempfile.mkdtemp(prefix="read_latency_")
        path = Path(tmp)
    try:
        client = make_client(Settings(), f"chdb://{path}")
        migrate(client)
        shape = synth.shape_for(rows)
        pick = Picker(shape)
        t = time.perf_counter()
        if not client.query("SELECT count() FROM wms_inventory").result_rows[0][0]:
            synth.bulk_load(client, shape)
            synth.live_transactions(client, shape, per_region=300)
        build_s = time.perf_counter() - t
        wait_for_merges(client)
        counts = {
            t: int(client.query(f"SELECT count() FROM {t}").result_rows[0][0])
            for t in ("wms_inventory", "wms_inventory_txn", "wms_serial_number", "wms_lot",
                      "wms_location", "wms_sku", "_watermark")
        }  # fmt: skip
        print(f"built in {build_s:.0f} s: {counts}", flush=True)

        mismatches = verify(client, pick, n_verify, seed=11)
        print(f"fast vs reference mismatches on sampled keys: {mismatches}", flush=True)

        results: dict[str, dict[str, Any]] = {}
        fast, ref = reads(queries, pick), reads(reference, pick)
        for name in fast:
            for _ in range(3):  # warm caches
                fast[name](client, random.Random(0))
            after = measure(client, fast[name], n_after, seed=42)
            before = measure(client, ref[name], n_before, seed=42) if n_before else None
            results[name] = {"before": before, "after": after}
            speedup = f"{before['p50_ms'] / after['p50_ms']:.0f}x" if before else "-"
            print(
                f"{name:22s} after p50 {after['p50_ms']:7.1f}  p95 {after['p95_ms']:7.1f}  "
                f"p99 {after['p99_ms']:7.1f} ms  {after['rps']:6.1f} req/s"
                + (
                    f" | before p50 {before['p50_ms']:8.1f} ms (n={before['n']}) "
                    f"p50 speedup {speedup}"
                    if before
                    else ""
                ),
                flush=True,
            )
        report = {
            "command": " ".join(["python -m bench.read_latency", *(argv or sys.argv[1:])]),
            "rows_base": rows,
            "row_counts": counts,
            "shape": {
                "regions": len(synth.REGIONS),
                "owners_per_region": shape.owners,
                "skus_per_owner": shape.skus_per_owner,
                "locations_per_warehouse": shape.locations,
            },
            "build": "bulk INSERT…SELECT through wms_* tables + ProjectionWriter transactions",
            "build_seconds": round(build_s, 1),
            "machine": {"cpus": _cpus(), "python": platform.python_version()},
            "mismatches": mismatches,
            "results": results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
        client.close()
        return 1 if any(mismatches.values()) else 0
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
