"""`stockcdc seed | run | truth`: seed WMS databases, drive the workload, print the truth.

Every command targets the `wms` database of every configured region unless told
otherwise (`--region` repeatable, `--dbname`). Connection details come from the one
settings object.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from typing import Annotated

import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from simulator.db import connect
from simulator.errors import SimulatorError
from simulator.oracle import read_truth
from simulator.seed import SeedReport, parse_size, seed_region
from simulator.workload import parse_mix, run
from stockcdc.settings import Region, Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="WMS workload simulator and truth oracle.")
console = Console(stderr=True)

RegionOpt = Annotated[
    list[str] | None,
    typer.Option("--region", "-r", help="Region name (repeatable); default: all regions."),
]
DbOpt = Annotated[
    str | None, typer.Option("--dbname", help="Database in each cluster (default: wms).")
]


def _regions(settings: Settings, names: list[str] | None) -> list[Region]:
    try:
        return [settings.region(n) for n in names] if names else settings.region_list()
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0])) from exc


def _create_database(settings: Settings, region: Region, dbname: str) -> None:
    """A fresh database with the WMS schema and the roles' grants (admin role)."""
    from infra.postgres import grant_roles, load_wms_schema

    with psycopg.connect(settings.pg_dsn(region, dbname="postgres"), autocommit=True) as c:
        exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with psycopg.connect(settings.pg_dsn(region, dbname=dbname), autocommit=True) as c:
        load_wms_schema(c)
        grant_roles(c, settings, dbname=dbname)


def _seed_one(
    settings: Settings,
    region: Region,
    dbname: str | None,
    seed: int,
    size: str,
    as_of: date,
    role: str,
) -> SeedReport:
    with connect(settings, region, dbname, role=role) as conn:
        return seed_region(conn, region, seed=seed, size=parse_size(size), as_of=as_of)


@app.command("seed")
def seed_cmd(
    region: RegionOpt = None,
    dbname: DbOpt = None,
    size: Annotated[
        str,
        typer.Option(
            "--size",
            "--scale",
            help="tiny | small | medium | large, or balance rows per region (250k, 3.4M).",
        ),
    ] = "small",
    seed: Annotated[int, typer.Option(help="Same seed, size and as-of → same data.")] = 1,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Date the data is relative to (default today).")
    ] = None,
    create: Annotated[
        bool, typer.Option(help="Create the database with the WMS schema if missing.")
    ] = False,
    role: Annotated[
        str,
        typer.Option(help="admin: bulk load without per-row FK triggers (fast); app: DML role."),
    ] = "admin",
    parallel: Annotated[int, typer.Option(help="Regions seeded at once.")] = 2,
) -> None:
    """Seed empty WMS databases with deterministic master data and opening stock."""
    settings = get_settings()
    regions = _regions(settings, region)
    day = date.fromisoformat(as_of) if as_of else date.today()
    try:
        parse_size(size)
    except SimulatorError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if create:
        for r in regions:
            _create_database(settings, r, dbname or settings.pg_database)
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(max_workers=max(1, min(parallel, len(regions)))) as pool:
            futures = [
                pool.submit(_seed_one, settings, r, dbname, seed, size, day, role) for r in regions
            ]
            reports = [f.result() for f in futures]
    except SimulatorError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    wall = time.perf_counter() - started
    table = Table("region", "balance rows", "serials", "ledger rows", "all rows", "s", "rows/s")
    for rep in reports:
        t = rep.rows_by_table
        table.add_row(
            rep.region,
            f"{t.get('inventory', 0):,}",
            f"{t.get('serial_number', 0):,}",
            f"{t.get('inventory_txn', 0):,}",
            f"{rep.total_rows:,}",
            f"{rep.seconds:.1f}",
            f"{rep.rows_per_second:,.0f}",
        )
    Console().print(table)
    total = sum(r.total_rows for r in reports)
    balance = sum(r.rows_by_table.get("inventory", 0) for r in reports)
    console.print(
        f"seeded {balance:,} balance rows ({total:,} rows) in {wall:.1f}s: "
        f"{total / wall:,.0f} rows/s overall"
    )


@app.command("run")
def run_cmd(
    region: RegionOpt = None,
    dbname: DbOpt = None,
    workers: Annotated[int, typer.Option(help="Worker threads per region.")] = 4,
    rate: Annotated[
        float | None, typer.Option(help="Target operations/s per region (default: max).")
    ] = None,
    count: Annotated[int | None, typer.Option(help="Operations per region, then stop.")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds, then stop.")] = None,
    mix: Annotated[
        str | None, typer.Option(help="Weights over the default mix: 'allocate=20,ship=0'.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the workers' choices.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the WMS workload (Ctrl-C stops it and prints the report)."""
    settings = get_settings()
    regions = _regions(settings, region)
    if count is None and duration is None:
        console.print("running until Ctrl-C")
    try:
        reports = run(
            settings,
            regions,
            dbname=dbname,
            workers=workers,
            rate=rate,
            count=count,
            duration=duration,
            mix=parse_mix(mix),
            seed=seed,
        )
    except SimulatorError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
        return
    table = Table(
        "region",
        "workers",
        "ops",
        "rejected",
        "errors",
        "retries",
        "target/s",
        "achieved/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
    )
    for rep in reports:
        d = rep.as_dict()
        table.add_row(
            rep.region,
            str(rep.workers),
            str(d["applied"]),
            str(d["rejected"]),
            str(d["errors"]),
            str(d["retries"]),
            "max" if rate is None else f"{rate:g}",
            f"{rep.rate:.1f}",
            f"{rep.latency(50):.1f}",
            f"{rep.latency(95):.1f}",
            f"{rep.latency(99):.1f}",
        )
    Console().print(table)
    for rep in reports:
        for sample in rep.stats.error_samples:
            console.print(f"[red]{rep.region}[/] {sample}")
    if any(rep.stats.errors for rep in reports):
        raise typer.Exit(1)


@app.command("truth")
def truth_cmd(
    region: RegionOpt = None,
    dbname: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Everything, as JSON.")] = False,
    owner: Annotated[str | None, typer.Option(help="Only this owner.code.")] = None,
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse.code.")] = None,
    sku: Annotated[str | None, typer.Option(help="Only this sku_code.")] = None,
    limit: Annotated[int, typer.Option(help="Table rows shown (not for --json).")] = 50,
) -> None:
    """Every stock figure per (owner, warehouse, SKU), per lot, per serial, from the WMS."""
    settings = get_settings()
    truth = read_truth(settings, _regions(settings, region), dbname=dbname)
    keep = {
        k
        for k in {*truth.stock, *truth.lots, *truth.ledger}
        if (owner is None or k.owner == owner)
        and (warehouse is None or k.warehouse == warehouse)
        and (sku is None or k.sku == sku)
    }
    for mapping in (truth.stock, truth.lots, truth.ledger):
        for k in [k for k in mapping if k not in keep]:
            del mapping[k]
    for sk in [
        k
        for k in truth.serials
        if (owner is not None and k.owner != owner) or (sku is not None and k.sku != sku)
    ]:
        del truth.serials[sk]
    if as_json:
        typer.echo(json.dumps(truth.as_json(), indent=1))
        return
    cols = (
        "on_hand",
        "available",
        "allocated",
        "pending_putaway",
        "qc_hold",
        "frozen",
        "damaged",
        "returned",
        "expired",
        "inbound_expected",
    )
    table = Table("owner", "warehouse", "sku", *cols, "earliest_expiry", "last_movement_at")
    for key, fig in sorted(truth.stock.items())[:limit]:
        table.add_row(
            *key,
            *(str(getattr(fig, c)) for c in cols),
            str(fig.earliest_expiry or ""),
            fig.last_movement_at.isoformat(timespec="seconds") if fig.last_movement_at else "",
        )
    Console().print(table)
    console.print(
        f"{len(truth.stock)} keys, {sum(len(v) for v in truth.lots.values())} lot rows, "
        f"{len(truth.serials)} serials; snapshots {truth.snapshots}"
    )


def register(parent: typer.Typer) -> None:
    """Add `seed`, `run` and `truth` as top-level commands of the project's CLI."""
    for name, fn in (("seed", seed_cmd), ("run", run_cmd), ("truth", truth_cmd)):
        parent.command(name, help=fn.__doc__)(fn)
