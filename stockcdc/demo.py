"""`stockcdc demo`: the whole product on one machine, from a clean clone.

Starts the regional WMS databases, Kafka and Connect with Debezium, seeds the warehouses
(first run only), shows one WMS commit arriving on Kafka, then runs the simulated
warehouses at a gentle rate while the projector and the Query API serve near-real-time
stock, and prints the seller dashboard's URL with the demo keys. A progress bar shows the
set-up; Ctrl-C stops the API, the projector, the simulator and every service.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cdc_consumers.raw import end_offsets, iter_events
from infra import services
from infra.errors import InfraError
from query_api.auth import DEMO_KEYS
from query_api.server import serve
from simulator.seed import parse_size, seed_region
from simulator.workload import run as run_workload
from stockcdc.settings import Settings

SELLER_KEY = DEMO_KEYS["seller:SELLER-0001"]
OMS_KEY = DEMO_KEYS["oms"]


def start_services(settings: Settings, console: Console) -> None:
    """`services.up` with a progress bar: one step per regional WMS, Kafka, Connect and
    the Debezium connectors."""
    steps = len(settings.region_list()) + 3
    columns = (SpinnerColumn(), TextColumn("{task.description:<48}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("starting services", total=steps)
        done = -1

        def step(message: str) -> None:
            nonlocal done
            done += 1
            bar.update(task, completed=done, description=f"starting {message}")

        services.up(settings, progress=step)
        bar.update(task, completed=steps, description="services up")


def print_welcome(settings: Settings, console: Console, rate: float) -> None:
    """Where to look, and with which keys."""
    base = f"http://{settings.api_host}:{settings.api_port}"
    console.print(
        f"\n[bold green]Dashboard[/]  {base}/dashboard/\n"
        f"  sign in with the seller key  [bold]{SELLER_KEY}[/]  (SELLER-0001)\n"
        f"[bold]Query API[/]  {base}/docs\n"
        f"  OMS key (every seller)  {OMS_KEY}\n"
        f"  try: curl -H 'Authorization: Bearer {OMS_KEY}'"
        f" '{base}/v1/stock?owner=SELLER-0001&limit=5'\n"
        "  DEV-ONLY keys: set STOCKCDC_API_KEYS to replace them.\n"
        f"Simulated warehouses: {rate:g} operations/s per region; the figures change as they"
        " work. [bold]Ctrl-C stops everything.[/]\n"
    )


def seed_if_empty(settings: Settings, console: Console, size: str = "small") -> None:
    """Seed each region's WMS once (a region that has warehouses is left as it is)."""
    for region in settings.region_list():
        with psycopg.connect(settings.pg_dsn(region)) as conn:
            row = conn.execute("SELECT count(*) FROM warehouse").fetchone()
            if row and row[0]:
                continue
            with console.status(f"seeding {region.name} ({size})"):
                report = seed_region(conn, region, seed=42, size=parse_size(size))
            console.print(
                f"seeded {region.name}: {report.total_rows} rows in {report.seconds:.1f}s"
            )


def show_a_change_flowing(settings: Settings, console: Console) -> None:
    """Commit one row in each regional WMS and show its Debezium event on Kafka."""
    for region in settings.region_list():
        start = end_offsets(settings, region.cdc_topic)
        code = f"DEMO-{uuid.uuid4().hex[:8].upper()}"
        with psycopg.connect(settings.pg_dsn(region, "app")) as conn:
            conn.execute("INSERT INTO owner (code, name) VALUES (%s, %s)", (code, "Demo seller"))
        committed = time.monotonic()
        for event in iter_events(settings, region.cdc_topic, start, timeout_s=60):
            value = event.value
            if isinstance(value, dict) and (value.get("after") or {}).get("code") == code:
                src = value["source"]
                console.print(
                    f"[bold]{region.name}[/]: INSERT owner {code} → Kafka {event.topic}"
                    f"@{event.offset} in {1000 * (time.monotonic() - committed):.0f} ms "
                    f"(lsn {src['lsn']}, txId {src['txId']})"
                )
                break
        else:
            raise InfraError(f"the change in {region.name} did not arrive within 60 s")


def run_demo(settings: Settings, console: Console, *, rate: float, keep_services: bool) -> int:
    """Everything up, seeded, flowing; the API in the foreground until Ctrl-C. Returns
    `serve`'s exit code: 1 when the projector died (the API stopped with it)."""
    started = time.monotonic()
    start_services(settings, console)
    console.print(f"[green]services up[/] in {time.monotonic() - started:.0f}s")
    stop = threading.Event()
    try:
        seed_if_empty(settings, console)
        show_a_change_flowing(settings, console)
        workload = threading.Thread(
            target=run_workload,
            args=(settings, settings.region_list()),
            kwargs={"workers": 1, "rate": rate, "stop": stop},
            name="simulator",
            daemon=True,
        )
        workload.start()
        print_welcome(settings, console, rate)
        return serve(settings, with_projector=True)
    finally:
        stop.set()
        if not keep_services:
            services.down(settings, progress=lambda m: console.print(f"stopping {m}"))
