"""Serving maintenance against history: the cost of recomputing a batch's SKUs as every
balance row gains versions and the ledger grows, read from the versioned tables (the
exact path: replays, rebuilds) and from the history-free inputs (streamed batches,
migration 009), in one run on one synthetic read model.

    .venv/bin/python -m bench.serving            # 300k balance rows, up to 8 versions each
    .venv/bin/python -m bench.serving --quick    # CI smoke

Each level adds one version of every balance row and one ledger row per balance row
(`INSERT … SELECT` inside ClickHouse, through the `wms_*` tables and their views, as
the writer's inserts go), lets merges run (OPTIMIZE … FINAL: what background merges
reach), then times the figures query for batches touching `SKUS_PER_BATCH` SKUs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import synth
from bench.common import RESULTS_DIR, Profile, machine

RESULTS = RESULTS_DIR / "serving.json"
SKUS_PER_BATCH = 20
#: LSN distance between history levels (above every LSN of the synthetic bulk).
_LAYER = 1_000_000_000
_COLUMNS = (
    "region, id, warehouse_id, location_id, owner_id, sku_id, lot_id, container_id, status,"
    " qty_on_hand, qty_allocated, in_date, last_movement_at, version"
)
_LEDGER_COLUMNS = (
    "region, occurred_at, txn_type, warehouse_id, owner_id, sku_id, lot_id, serial_id,"
    " from_location_id, to_location_id, from_status, to_status, qty, d_on_hand, d_allocated,"
    " reason_code, ref_type, ref_no, operator"
)


def _add_level(client: Any, level: int) -> None:
    """One more version of every balance row (the previous level's, one layer of LSNs up)
    and one more ledger row per base ledger row (`level` seconds later)."""
    params = {"layer": _LAYER, "lo": (level - 1) * _LAYER, "level": level}
    client.command(
        f"INSERT INTO wms_inventory ({_COLUMNS}, _lsn, _commit_lsn, _is_deleted, _extra)"
        f" SELECT {_COLUMNS.replace('version', 'version + 1')}, _lsn + {{layer:UInt64}},"
        " _commit_lsn + {layer:UInt64}, _is_deleted, _extra FROM wms_inventory"
        " WHERE _commit_lsn >= {lo:UInt64} AND _commit_lsn < {lo:UInt64} + {layer:UInt64}",
        parameters=params,
    )
    later = _LEDGER_COLUMNS.replace("occurred_at", "occurred_at + toIntervalSecond({level:UInt32})")
    client.command(
        f"INSERT INTO wms_inventory_txn (id, {_LEDGER_COLUMNS}, _lsn, _commit_lsn, _is_deleted,"
        f" _extra) SELECT id + {{level:UInt32}} * {{layer:UInt64}}, {later},"
        " _lsn + {level:UInt32} * {layer:UInt64}, _commit_lsn + {level:UInt32} * {layer:UInt64},"
        " 0, _extra FROM wms_inventory_txn WHERE _commit_lsn < {layer:UInt64}",
        parameters=params,
    )
    for table in ("_inventory_latest", "_ledger_last"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")


def _time(client: Any, sql: str, params: dict[str, Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.query(sql, parameters=params)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def _measure(path: Path, rows: int, levels: list[int], batches: int, out: Any) -> None:
    """Child: build, then per history level the median query time of both paths."""
    from read_model import serving
    from read_model.client import make_client
    from read_model.migrate import migrate
    from stockcdc.settings import Settings

    client = make_client(Settings(), f"chdb://{path}")
    migrate(client)
    shape = synth.shape_for(rows)
    synth.bulk_load(client, shape)
    region = synth.REGIONS[0]
    rnd = random.Random(11)
    picks = [rnd.sample(range(1, shape.skus + 1), SKUS_PER_BATCH) for _ in range(batches)]
    results = []
    level = 0
    for target in levels:
        while level < target:
            level += 1
            _add_level(client, level)
        cut = level * _LAYER + shape.watermark
        exact, newest, equal = [], [], True
        for skus in picks:
            params: dict[str, Any] = {"region": region, "wm": cut, "skus": sorted(skus)}
            named = client.query(serving._NAMES_OF_SKUS, parameters=params).result_rows
            params.update(serving._bound([serving._Names.of(r) for r in named]))
            exact.append(_time(client, serving._FIGURES_SOME, params, 3))
            newest.append(_time(client, serving._FIGURES_NEWEST, params, 3))
            a, b = (
                sorted(map(tuple, client.query(q, parameters=params).result_rows))
                for q in (serving._FIGURES_SOME, serving._FIGURES_NEWEST)
            )
            equal = equal and a == b
        versions, ledger = (
            int(client.query(f"SELECT count() FROM {t} WHERE region = {{r:String}}",
                             parameters={"r": region}).result_rows[0][0])
            for t in ("wms_inventory", "wms_inventory_txn")
        )  # fmt: skip
        results.append(
            {
                "versions_per_balance_row": level + 1,
                "balance_versions": versions,
                "ledger_rows": ledger,
                "exact_ms_median": statistics.median(exact),
                "history_free_ms_median": statistics.median(newest),
                "ratio": round(statistics.median(newest) / statistics.median(exact), 3),
                "same_figures": equal,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    client.close()
    out.put(results)


def run(profile: Profile) -> dict[str, Any]:
    """The figures query's time for a batch of `SKUS_PER_BATCH` SKUs per history level,
    both paths; fails if they ever disagree."""
    rows = profile.pick(30_000, 900_000)  # over the three regions: one region is measured
    levels = profile.pick([0, 2], [0, 1, 3, 7])
    batches = profile.pick(3, 10)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        child = ctx.Process(target=_measure, args=(Path(tmp) / "ch", rows, levels, batches, q))
        child.start()
        levels_out: list[dict[str, Any]] = q.get()
        child.join()
    if not all(r["same_figures"] for r in levels_out):
        raise RuntimeError(f"the two paths disagree: {levels_out}")
    return {
        "method": (
            f"One region of a synthetic read model ({rows // 3} base balance rows); each level"
            " adds a version of every balance row and a ledger row per base ledger row,"
            " merges run, then the figures query for batches of"
            f" {SKUS_PER_BATCH} random SKUs (median of 3 runs each, median over"
            f" {batches} batches): versioned tables at the cut (exact path) against"
            " `_inventory_latest` + `_ledger_last` (streamed batches)."
        ),
        "profile": profile.name,
        "levels": levels_out,
        "machine": machine(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="CI smoke")
    args = ap.parse_args()
    result = run(Profile("quick" if args.quick else "full"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
