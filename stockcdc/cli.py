"""The project's command line: `stockcdc infra up|down|status|reset`, `stockcdc demo`, ..."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from infra import services
from infra.errors import InfraError
from infra.jvm import ensure_jars, java_bin
from infra.postgres import PG_BIN, ensure_server_binaries
from simulator.cli import register as register_simulator
from stockcdc.settings import get_settings

if TYPE_CHECKING:
    from cdc_consumers.service import ProjectorThread

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="CDC stock read model for 3PL warehouses."
)
infra_app = typer.Typer(no_args_is_help=True, help="Start, stop and inspect the real services.")
app.add_typer(infra_app, name="infra")
register_simulator(app)  # stockcdc seed | run | truth
console = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=1)


@infra_app.command()
def install(
    browser: bool = typer.Option(
        False, "--browser", help="Only Chromium (Debian's package), for the browser tests."
    ),
) -> None:
    """Install or check what the services need: PostgreSQL 15, Java 17+, the Maven jars."""
    settings = get_settings()
    if browser:
        from infra.browser import ensure_chromium

        try:
            with console.status("checking Chromium (Debian's package)"):
                path = ensure_chromium()
        except InfraError as exc:
            raise _fail(exc) from exc
        console.print(f"chromium {path}")
        return
    try:
        with console.status("checking PostgreSQL 15 server binaries"):
            ensure_server_binaries()
        java = java_bin(settings)
        with console.status("resolving Kafka, Connect and Debezium jars (Maven)"):
            kafka_lib, plugins = ensure_jars(settings)
    except InfraError as exc:
        raise _fail(exc) from exc
    console.print(f"postgres {PG_BIN}, java {java}, jars {kafka_lib}, plugins {plugins}")


@infra_app.command()
def up() -> None:
    """Start the regional PostgreSQL clusters, Kafka, Connect and the connectors."""
    started = time.monotonic()
    try:
        with console.status("starting services") as st:
            services.up(get_settings(), progress=lambda m: st.update(f"starting {m}"))
    except InfraError as exc:
        raise _fail(exc) from exc
    console.print(f"[green]all services up[/] in {time.monotonic() - started:.0f}s")
    _print_status()


@infra_app.command()
def down() -> None:
    """Stop every service (data is kept)."""
    services.down(get_settings(), progress=lambda m: console.print(f"stopping {m}"))


@infra_app.command()
def resnapshot(region: str = typer.Argument(help="The region whose slot was lost.")) -> None:
    """Re-snapshot one region (its replication slot lost or invalidated) without touching
    the others: stop its connector, forget its offsets, resume. Debezium makes the slot
    again and streams a fresh snapshot; the projector applies it and deletes what the
    snapshot no longer has. Check with `stockcdc reconcile` afterwards."""
    from infra.connect import resnapshot as run_resnapshot

    settings = get_settings()
    known = {r.name: r for r in settings.region_list()}
    if region not in known:
        raise _fail(ValueError(f"unknown region {region!r}; known: {sorted(known)}"))
    try:
        run_resnapshot(settings, known[region])
    except InfraError as exc:
        raise _fail(exc) from exc
    console.print(f"{region}: connector restarted from a fresh snapshot")


@infra_app.command()
def reset() -> None:
    """Stop every service and wipe the state directory."""
    services.reset(get_settings())
    console.print(f"wiped {get_settings().state_path}")


@infra_app.command()
def status() -> None:
    """Each service: up/down, port, pid, connector task state. Exit 1 if anything is down."""
    if not _print_status():
        raise typer.Exit(code=1)


def _print_status() -> bool:
    rows = services.status(get_settings())
    table = Table("service", "state", "port", "pid", "detail")
    for r in rows:
        table.add_row(
            r.name,
            "[green]up[/]" if r.up else "[red]down[/]",
            str(r.port or ""),
            str(r.pid or ""),
            r.detail,
        )
    Console().print(table)
    return all(r.up for r in rows)


@app.command()
def demo(
    rate: float = typer.Option(3.0, help="Simulated operations per second per region."),
    keep_services: bool = typer.Option(
        False, "--keep-services", help="Leave the services running on exit."
    ),
) -> None:
    """Run the product: services, seeded warehouses at work, projector and API (Ctrl-C stops)."""
    from stockcdc.demo import run_demo

    try:
        code = run_demo(get_settings(), console, rate=rate, keep_services=keep_services)
    except InfraError as exc:
        raise _fail(exc) from exc
    except KeyboardInterrupt:  # Ctrl-C is how the demo ends: everything is stopped by now
        code = 0
    if code:  # logged as `projector.failed`, with its error
        console.print("[red]demo stopped: the projector died[/]")
        raise typer.Exit(code=code)
    console.print("demo stopped")


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the ClickHouse read model (idempotent)."""
    from read_model.client import make_client
    from read_model.migrate import migrate

    settings = get_settings()
    applied = migrate(make_client(settings), settings.clickhouse_cluster)
    console.print(f"applied DDL versions: {applied or 'none (up to date)'}")


@app.command()
def project(
    show_progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show each region's catch-up progress."
    ),
) -> None:
    """Run the projector: regions' CDC topics → ClickHouse, until Ctrl-C (then it commits)."""
    import structlog
    from kafka.errors import KafkaError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from cdc_consumers.service import (
        build_projector,
        progress,
        reconciling,
        running,
        stop_on_signals,
    )
    from read_model.client import make_client

    stop = stop_on_signals()
    settings = get_settings()
    log = structlog.get_logger(__name__)
    log.info("projector.starting", group=settings.consumer_group)
    if settings.projector_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.projector_metrics_port, addr=settings.api_host)
    client = make_client(settings)
    projector = build_projector(settings, client, stop)
    with running(projector) as thread, reconciling(settings):
        if not show_progress:
            thread.join()
            _exit_if_failed(thread)
            return
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
        ) as bar:
            tasks: dict[str, TaskID] = {}
            while thread.is_alive():
                try:
                    regions = progress(settings)
                except KafkaError as exc:  # the projector meets it too, and says so
                    log.warning("project.progress_unavailable", error=repr(exc))
                    regions = []
                for p in regions:
                    if p.region not in tasks:
                        tasks[p.region] = bar.add_task(p.region, total=p.end)
                    bar.update(tasks[p.region], completed=p.committed, total=p.end)
                thread.join(timeout=1.0)
        _exit_if_failed(thread)


def _exit_if_failed(thread: ProjectorThread) -> None:
    """Exit 1 when the projector died of an error (logged as `projector.failed`): a
    supervisor restarts it, where an exit 0 would say it stopped as asked."""
    if thread.error is not None:
        raise typer.Exit(code=1)


@app.command("reconcile")
def reconcile_cmd(
    region: Annotated[
        list[str] | None, typer.Option(help="Only these regions (default: all).")
    ] = None,
    timeout: float | None = typer.Option(
        None, help="Seconds a region may take to reach the WMS snapshot's point."
    ),
) -> None:
    """Compare the projection with every regional WMS at a consistent point; print the
    differences, write the report (.state/reconcile/last.json); exit 1 on any.

    In embedded mode (chDB) run it while no projector or API holds the read model;
    they run it themselves every STOCKCDC_RECONCILE_INTERVAL_S."""
    from read_model.client import make_client
    from read_model.reconcile import iter_differences, reconcile, report_dir

    settings = get_settings()
    known = {r.name: r for r in settings.region_list()}
    unknown = sorted(set(region or ()) - set(known))
    if unknown:
        raise _fail(ValueError(f"unknown region(s) {unknown}; known: {sorted(known)}"))
    client = make_client(settings)
    try:
        chosen = [known[r] for r in region] if region else None
        report = reconcile(settings, client, chosen, timeout)
    finally:
        client.close()
    for line in iter_differences(report):
        console.print(line, soft_wrap=True)
    for r in report.regions:
        state = "[green]equal[/]" if r.comparable and not r.differences else "[red]DIFFERENT[/]"
        console.print(f"{r.region}: {state} at LSN {r.cut_lsn} ({r.stock_keys} stock keys, "
                      f"{sum(t.source_rows for t in r.tables)} rows, {r.seconds}s)")  # fmt: skip
    console.print(f"report: {report_dir(settings) / 'last.json'}")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def serve(
    projector: bool = typer.Option(
        True,
        "--projector/--no-projector",
        help="Also run the projector in this process (required for embedded chDB).",
    ),
    host: str | None = typer.Option(None, help="Listen address (default STOCKCDC_API_HOST)."),
    port: int | None = typer.Option(None, help="Listen port (default STOCKCDC_API_PORT)."),
) -> None:
    """Run the Query API (and, by default, the projector in a background thread) until
    Ctrl-C; exit 1 if the projector dies (the API is stopped with it)."""
    from query_api.server import serve as run_server

    settings = get_settings()
    update = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    code = run_server(settings.model_copy(update=update), with_projector=projector)
    if code:  # the projector died (logged as `projector.failed`): see _exit_if_failed
        raise typer.Exit(code=code)


apikey_app = typer.Typer(no_args_is_help=True, help="API keys of the Query API.")
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    owner: str | None = typer.Option(None, help="Seller key for this owner code."),
    scope: str | None = typer.Option(None, help="oms (every owner) or bi; default seller."),
) -> None:
    """Print a new key (shown once) and its config line for STOCKCDC_API_KEYS."""
    from query_api.auth import KeyConfigError, Scope, new_key

    try:
        chosen = Scope(scope) if scope else Scope.SELLER
        key, line = new_key(chosen, owner)
    except (ValueError, KeyConfigError) as exc:
        raise _fail(exc) from exc
    Console().print(f"key:         {key}", soft_wrap=True)
    Console().print(f"config line: {line}", soft_wrap=True)
    console.print(
        "Append the config line to STOCKCDC_API_KEYS (comma separated); the key is "
        "not stored anywhere, hand it to its user now."
    )


bi_app = typer.Typer(no_args_is_help=True, help="BI access: daily stock snapshots, server DDL.")
app.add_typer(bi_app, name="bi")


@bi_app.command("snapshot")
def bi_snapshot(
    day: str | None = typer.Option(None, help="Day (YYYY-MM-DD, UTC); default: yesterday."),
    cut: str | None = typer.Option(
        None, help="Snapshot as of this ISO time instead of the day's end (tests, demos)."
    ),
) -> None:
    """Store every key's stock figures as of the end of a day in bi_stock_daily
    (idempotent: run it again, or for any past day, to backfill)."""
    from datetime import UTC, date, datetime, timedelta

    from read_model.bi import NotCaughtUp, snapshot_stock
    from read_model.client import make_client

    settings = get_settings()
    try:
        when = date.fromisoformat(day) if day else datetime.now(UTC).date() - timedelta(days=1)
        cut_ts = datetime.fromisoformat(cut) if cut else None
        if cut_ts is not None and cut_ts.tzinfo is None:
            raise ValueError("--cut needs a UTC offset, e.g. 2026-01-31T18:00:00+00:00")
    except ValueError as exc:
        raise _fail(exc) from exc
    client = make_client(settings)
    try:
        snap = snapshot_stock(client, when, cut_ts)
    except NotCaughtUp as exc:
        raise _fail(exc) from exc
    finally:
        client.close()
    console.print(f"{snap.day}: {snap.rows} keys as of {snap.cut_ts.isoformat()} ({snap.cuts})")


@bi_app.command("access-ddl")
def bi_access_ddl() -> None:
    """Print the server-mode DDL: role bi_reader, BI limits profile, users and per-seller
    row policies, from STOCKCDC_BI_DATABASE / _BI_USERS / _BI_SELLER_USERS."""
    from read_model.bi import render_access_ddl

    try:
        sys.stdout.write(render_access_ddl(get_settings()))
    except ValueError as exc:
        raise _fail(exc) from exc


def main() -> None:
    try:
        app()
    except InfraError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
