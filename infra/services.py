"""`up`, `down`, `status` and `reset` of all the real services, idempotent."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from infra.connect import ConnectClient, register_connectors, task_state
from infra.errors import InfraError
from infra.jvm import connect_service, kafka_service, port_open, start_connect, start_kafka
from infra.postgres import Cluster, ensure_server_binaries, remove_cluster_dirs
from stockcdc.settings import Settings

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    up: bool
    port: int | None
    pid: int | None
    detail: str = ""


def clusters(settings: Settings) -> list[Cluster]:
    return [Cluster(settings, r) for r in settings.region_list() if r.local]  # no DSN


def up(settings: Settings, progress: Progress = _quiet, *, connectors: bool = True) -> None:
    """Start whatever is not running, in dependency order; harmless when all is up."""
    settings.state_path.mkdir(parents=True, exist_ok=True)
    ensure_server_binaries()
    for cluster in clusters(settings):
        progress(f"postgres {cluster.region.name} (port {cluster.region.pg_port})")
        cluster.start()
        cluster.bootstrap()
    progress(f"kafka (port {settings.infra.kafka_port})")
    start_kafka(settings)
    progress(f"kafka connect (port {settings.infra.connect_port})")
    start_connect(settings)
    if connectors:
        progress("debezium connectors")
        register_connectors(settings)


def down(settings: Settings, progress: Progress = _quiet) -> None:
    """Stop everything: Connect first (its tasks release the slots), then Kafka, then PG."""
    progress("kafka connect")
    connect_service(settings).stop()
    progress("kafka")
    kafka_service(settings).stop()
    for cluster in clusters(settings):
        progress(f"postgres {cluster.region.name}")
        cluster.stop()


def reset(settings: Settings, progress: Progress = _quiet) -> None:
    """Stop everything and wipe the state dir (data, logs, configs; jars stay cached in ~/.m2)."""
    down(settings, progress)
    remove_cluster_dirs(settings)
    shutil.rmtree(settings.state_path, ignore_errors=True)


def status(settings: Settings) -> list[ServiceStatus]:
    """Each service: up or down, its port and pid; the connectors' task states."""
    result: list[ServiceStatus] = []
    for cluster in clusters(settings):
        pid = cluster.pid()
        port = cluster.region.pg_port
        result.append(
            ServiceStatus(
                f"postgres/{cluster.region.name}", pid is not None and port_open(port), port, pid
            )
        )
    for svc in (kafka_service(settings), connect_service(settings)):
        pid = svc.pid()
        result.append(
            ServiceStatus(svc.name, pid is not None and port_open(svc.port), svc.port, pid)
        )
    connect_up = result[-1].up
    for region in settings.region_list():
        state = "UNKNOWN (connect down)"
        if connect_up:
            try:
                with ConnectClient(settings, timeout_s=5) as client:
                    state = task_state(client.status(region.connector_name))
            except InfraError as exc:
                state = f"UNKNOWN ({exc})"
        result.append(
            ServiceStatus(
                f"connector/{region.connector_name}", state == "RUNNING", None, None, state
            )
        )
    return result
