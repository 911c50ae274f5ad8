"""The benchmarks' process helpers: a child gets exactly the parent's settings through the
environment, CPU of a process tree, a region's lag from the metrics, the commands run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from bench.live import (
    CLOCK_TICKS,
    PROJECTOR_METRICS,
    DemoProcess,
    ProjectProcess,
    ServeProcess,
    cpu_seconds,
    insert_shares,
    projector_activity,
    settings_env,
    tree_cpu_seconds,
)
from stockcdc.settings import Settings


def test_settings_env_round_trips_nested_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.model_validate(
        {
            "regions": ("us-west", "eu-central"),
            "kafka": {
                "bootstrap_servers": ("b1:9093", "b2:9093"),
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "stockcdc",
                "sasl_password": "s3cret",
                "ssl_cafile": "/ca.pem",
            },
            "connect": {"url": "https://connect:8083"},
            "wms": {"dsns": {"eu-central": "host=wms-euc port=6432 dbname=wms"}},
            "infra": {"kafka_port": 29092, "pg_durable": True},
        }
    )
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child == settings
    assert child.kafka_client_config() == settings.kafka_client_config()
    assert child.pg_dsn(child.region("eu-central")) == settings.pg_dsn(
        settings.region("eu-central")
    )


def test_tree_cpu_counts_live_and_reaped_children() -> None:
    """The demo's CPU is its process's and its children's: a child's time counts while it
    runs and, once reaped, through its parent's reaped-children time."""
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while (burnt := cpu_seconds(child.pid)) < 0.39:  # then it sleeps
            assert time.monotonic() < deadline, "the child did not burn its CPU"
            time.sleep(0.05)
        own = cpu_seconds(os.getpid())  # read first: the tree's reading can only be later
        assert ticks(tree_cpu_seconds(os.getpid()) - own) >= ticks(burnt)
    finally:
        child.kill()
        child.wait()
    own = cpu_seconds(os.getpid())
    assert ticks(tree_cpu_seconds(os.getpid()) - own) >= ticks(burnt)


def ticks(seconds: float) -> int:
    """CPU seconds as the clock ticks /proc counts them (float differences of tick
    multiples are off by an ulp: 2.32 - 1.91 < 0.41)."""
    return round(seconds * CLOCK_TICKS)


def test_lag_is_the_later_of_commit_and_heartbeat_per_region(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    commit = Gauge("stockcdc_watermark_commit_ts_seconds", "", ["region"], registry=registry)
    heartbeat = Gauge("stockcdc_heartbeat_ts_seconds", "", ["region"], registry=registry)
    now = time.time()
    commit.labels("us-west").set(now - 10)
    heartbeat.labels("us-west").set(now - 1)  # idle: current through its heartbeats
    commit.labels("eu-central").set(now - 30)  # behind
    proc = ServeProcess(Settings(), tmp_path / "log")
    server, thread = start_http_server(proc.port, addr="127.0.0.1", registry=registry)
    try:
        lags = proc.lag_s()
    finally:
        server.shutdown()
        thread.join()
    assert lags.keys() == {"us-west", "eu-central"}
    assert 1 <= lags["us-west"] < 5
    assert 30 <= lags["eu-central"] < 35


def test_project_serves_its_metrics_where_the_bench_reads_them(tmp_path: Path) -> None:
    proc = ProjectProcess(Settings(), tmp_path / "log")
    assert proc.command[0] == "project"
    assert proc.settings.projector_metrics_port == proc.port
    assert proc.base_url == f"http://{proc.settings.api_host}:{proc.port}"


def test_the_demo_never_stops_the_shared_services_on_exit() -> None:
    assert DemoProcess.command == ("demo", "--keep-services")


def test_insert_shares_rank_the_tables_by_the_windows_insert_time() -> None:
    before = {"wms_inventory": 1.0, "stock_current": 2.0}
    after = {"wms_inventory": 4.0, "stock_current": 2.5, "_watermark_max": 1.0}
    shares = insert_shares(before, after, seconds=10.0, top=2)
    assert shares == {"wms_inventory": 0.3, "_watermark_max": 0.1}


def test_projector_activity_tells_the_figures_write_from_the_wait_for_rows() -> None:
    """A flush's figures take milliseconds; its commit waits up to a second more for its
    rows: the write time and the time to commit are two figures."""
    before = dict.fromkeys(PROJECTOR_METRICS, 0.0)
    after = {
        **before,
        "stockcdc_flush_seconds_count": 10.0,
        "stockcdc_flush_seconds_sum": 6.0,  # 600 ms from write to commit
        "stockcdc_write_seconds_sum": 0.2,  # 20 ms of figures each
        "stockcdc_rows_write_seconds_sum": 0.3,
        "stockcdc_transactions_total": 50.0,
    }
    got = projector_activity(before, after, seconds=2.0)
    assert (got["batches_per_s"], got["batch_write_ms_mean"]) == (5.0, 20)
    assert (got["rows_write_ms_per_s"], got["writing_fraction_of_time"]) == (150, 0.25)
    assert (got["flush_to_commit_ms_mean"], got["transactions_per_s"]) == (600, 25.0)
