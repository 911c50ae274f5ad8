"""Query API latency and throughput over HTTP, on a read model of millions of balance rows.

    .venv/bin/python -m bench.api             # ≥ 10M balance rows (goals: `GOAL`)
    .venv/bin/python -m bench.api --quick     # CI smoke: 300k rows
    .venv/bin/python -m bench.api --path P --baseline OLD.json   # reuse a model, and keep
                                              # an earlier run's reads beside the new ones

The read model is synthetic (`bench.synth`: bulk rows through the `wms_*` tables, then real
transactions through `ProjectionWriter`, which builds the serving figures), built in a
child process; the API is `stockcdc serve --no-projector` over it in another, so its peak
RSS is its own. Each read is measured sequentially (latency) and then by several client
threads at once (requests/s); every answer must be a 200.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench import synth
from bench.common import RESULTS_DIR, Profile, latency_summary, machine, peak_rss_mb
from bench.live import ServeProcess
from bench.read_latency import Picker
from stockcdc.settings import Settings, get_settings

#: A request path drawn at random from existing keys.
Path_ = Callable[[random.Random], str]

#: Issue 15: single-SKU p99 and requests/s from one process; lots, a serial and a SKU's
#: movements p99 (sequential, over HTTP).
GOAL = {
    "stock_one_p99_ms": 10,
    "stock_one_rps": 500,
    "lots_p99_ms": 50,
    "serial_p99_ms": 50,
    "movements_sku_100_p99_ms": 50,
}


def paths(pick: Picker) -> dict[str, Path_]:
    """The measured reads: single-SKU stock, an owner's first page, lots, a serial, an
    owner's SKU's movements."""

    def key(rnd: random.Random) -> str:
        owner, warehouse, sku = pick.sku_key(rnd)[1]
        return f"{quote(owner)}/{quote(warehouse)}/{quote(sku)}"

    def page(rnd: random.Random) -> str:
        return f"/v1/stock?owner={pick.sku_key(rnd)[1][0]}&limit=100"

    def serial(rnd: random.Random) -> str:
        owner, sku, serial_no = pick.serial(rnd)
        return f"/v1/serials/{owner}/{sku}/{serial_no}"

    def moves(rnd: random.Random) -> str:
        owner, _, sku = pick.sku_key(rnd)[1]
        return f"/v1/movements?owner={owner}&sku={sku}&limit=100"

    return {
        "stock_one": lambda rnd: f"/v1/stock/{key(rnd)}",
        "stock_page_owner_100": page,
        "lots": lambda rnd: f"/v1/stock/{key(rnd)}/lots",
        "serial": serial,
        "movements_sku_100": moves,
    }


def _build(path: Path, rows: int) -> dict[str, Any]:
    """Child process: the synthetic read model at `path` (its serving figures built by the
    first real transactions)."""
    from read_model.client import make_client
    from read_model.migrate import migrate

    client = make_client(Settings(), f"chdb://{path}")
    started = time.perf_counter()
    migrate(client)  # on a reused model: the migrations it lacks, their backfills included
    migrated = time.perf_counter() - started
    shape = synth.shape_for(rows)
    started = time.perf_counter()
    built = not client.query("SELECT count() FROM wms_inventory").result_rows[0][0]
    if built:
        synth.bulk_load(client, shape)
        synth.live_transactions(client, shape, per_region=300)
    seconds = time.perf_counter() - started
    counts = {
        t: int(client.query(f"SELECT count() FROM {t}").result_rows[0][0])
        for t in ("wms_inventory", "stock_current")
    }
    client.close()
    return {
        "built": built,
        "seconds": round(seconds, 1),
        "migrate_seconds": round(migrated, 1),
        "rows": counts,
    }


def _rss_mb() -> float:
    """This process's resident set now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _figures_state(path: Path, region: str) -> dict[str, Any]:
    """Child process: what the projection writer's in-memory figures of one region cost at
    this size (`FigureKeeper.load` at the region's watermark): load time, keys, the
    process's RSS growth, and the Python heap it holds (tracemalloc, a second load: the
    tracing slows the load, so it is not timed)."""
    import gc
    import tracemalloc

    from read_model import queries
    from read_model.client import ColumnInserter, make_client
    from read_model.figures import FigureKeeper

    client = make_client(Settings(), f"chdb://{path}")
    cut = queries.visible_lsns(client)[region]
    keeper = FigureKeeper(client, ColumnInserter(client))
    gc.collect()
    before = _rss_mb()
    started = time.perf_counter()
    state = keeper.load(region, cut)
    seconds = time.perf_counter() - started
    gc.collect()
    rss_delta = _rss_mb() - before
    keys = len(state.keys)
    del state
    gc.collect()
    tracemalloc.start()
    state = keeper.load(region, cut)
    python_mb = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    del state
    client.close()
    return {
        "region": region,
        "cut": cut,
        "keys": keys,
        "seconds": round(seconds, 1),
        "rss_mb_delta": round(rss_delta, 1),
        "python_heap_mb": round(python_mb, 1),
    }


def _in_child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(target, args)


class Load:
    """HTTP requests against the API with keep-alive clients, one per thread."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url, self.headers = base_url, {"Authorization": f"Bearer {api_key}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30.0)

    def sequential(self, make: Path_, n: int, seed: int) -> dict[str, Any]:
        """n requests one after another: latency percentiles."""
        rnd, times = random.Random(seed), []
        with self.client() as http:
            for _ in range(3):  # warm connection and caches
                _ok(http.get(make(rnd)))
            started = time.perf_counter()
            for _ in range(n):
                t = time.perf_counter()
                _ok(http.get(make(rnd)))
                times.append((time.perf_counter() - t) * 1000)
            seconds = time.perf_counter() - started
        return {**latency_summary(times), "rps": round(n / seconds, 1)}

    def concurrent(self, make: Path_, threads: int, seconds: float, seed: int) -> dict[str, Any]:
        """`threads` clients for `seconds`: requests/s and latency under load."""
        stop = time.monotonic() + seconds
        times: list[float] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            rnd, mine = random.Random(seed + i), []
            try:
                with self.client() as http:
                    while time.monotonic() < stop:
                        t = time.perf_counter()
                        _ok(http.get(make(rnd)))
                        mine.append((time.perf_counter() - t) * 1000)
            except BaseException as exc:  # surfaced below: a failed request fails the run
                errors.append(exc)
            with lock:
                times.extend(mine)

        started = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        if errors:
            raise errors[0]
        elapsed = time.perf_counter() - started
        return {"threads": threads, **latency_summary(times), "rps": round(len(times) / elapsed, 1)}


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url} → {response.status_code}: {response.text}")


def run(
    profile: Profile, path: Path | None = None, baseline: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Build (or reuse at `path`) the read model, serve it, measure every read; with
    `baseline` (an earlier run's results) its reads and build are kept as `baseline`."""
    rows = profile.pick(300_000, 10_000_000)
    n = profile.pick(100, 1000)
    threads, seconds = 8, profile.pick(3.0, 15.0)
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        where = path or Path(tmp) / "clickhouse"
        built = _in_child(_build, where, rows)
        print(f"read model: {built}", flush=True)
        figures = _in_child(_figures_state, where, synth.REGIONS[0])
        print(f"figures state: {figures}", flush=True)
        settings = get_settings().model_copy(update={"clickhouse_url": f"chdb://{where}"})
        server = ServeProcess(settings, Path(tmp) / "api.log", args=("--no-projector",))
        results: dict[str, Any] = {}
        with server:
            load = Load(server.base_url, server.api_key)
            for name, make in paths(Picker(synth.shape_for(rows))).items():
                one = load.sequential(make, n, seed=42)
                many = load.concurrent(make, threads, seconds, seed=43)
                results[name] = {"sequential": one, "concurrent": many}
                print(
                    f"{name:22s} p50 {one['p50_ms']:7.1f}  p99 {one['p99_ms']:7.1f} ms"
                    f"  {one['rps']:6.1f} req/s sequential | {many['rps']:6.1f} req/s"
                    f" with {threads} clients (p99 {many['p99_ms']:.1f} ms)",
                    flush=True,
                )
            rss = peak_rss_mb(server.pid)
    one = results["stock_one"]
    return {
        "method": (
            "HTTP keep-alive clients on the same machine against `stockcdc serve"
            " --no-projector` over a synthetic chDB read model; sequential requests for"
            f" latency, then {threads} client threads for requests/s."
        ),
        "goal": GOAL,
        "balance_rows": built["rows"]["wms_inventory"],
        "stock_keys": built["rows"]["stock_current"],
        "build_seconds": built["seconds"] if built["built"] else None,  # None: model reused
        "migrate_seconds": built["migrate_seconds"],
        "figures_state": figures,
        "reads": results,
        "stock_one_p99_ms": one["sequential"]["p99_ms"],
        "stock_one_rps": max(one["sequential"]["rps"], one["concurrent"]["rps"]),
        "api_peak_rss_mb": rss,
        "machine": machine(),
        **({"baseline": _baseline(baseline)} if baseline else {}),
    }


def _baseline(old: dict[str, Any]) -> dict[str, Any]:
    """What an earlier run measured (same model reused): its reads and how it was built."""
    keep = ("balance_rows", "build_seconds", "reads", "stock_one_p99_ms", "stock_one_rps")
    return {k: old[k] for k in keep if k in old}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="CI smoke: 300k rows, few requests")
    ap.add_argument("--path", type=Path, default=None, help="reuse a chDB read model here")
    ap.add_argument(
        "--baseline", type=Path, default=None, help="an earlier run's results to keep beside"
    )
    args = ap.parse_args()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    result = run(Profile("quick" if args.quick else "full"), args.path, baseline)
    out = RESULTS_DIR / "api.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
