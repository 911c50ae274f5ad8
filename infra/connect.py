"""The Debezium connectors: one per region, registered idempotently over Connect's REST API."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from infra.errors import InfraError
from infra.postgres import PUBLICATION
from schemas.events import WAL_MARK_PREFIX
from stockcdc.settings import WMS_TABLES, Region, Settings

#: The WAL mark's content: the WMS clock in epoch ms, rounded down. A mark must never
#: claim a time its clock had not reached: numeric → bigint rounds to nearest, so a
#: mark could be up to 0.5 ms ahead, and a `min_as_of` read could be answered without
#: a commit that returned within that half millisecond.
WAL_MARK_CLOCK_SQL = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint::text"

#: libpq TLS keywords of a region's DSN that the connector takes as `database.<keyword>`.
PG_TLS_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def connector_config(settings: Settings, region: Region) -> dict[str, str]:
    """Debezium PostgreSQL connector config of one region.

    One topic per region (`Region.cdc_topic`) carries the data events, the transaction
    BEGIN/END records, the heartbeats and the WAL marks in commit order, so a consumer
    can apply each WMS transaction whole (DESIGN decision 4) and advance the watermark
    in order (decision 5); regions are separate topics so consumers scale out across
    them.
    """
    prefix = re.escape(region.topic_prefix)
    pg = region.conninfo_params  # the region's DSN, or its local cluster
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": pg["host"],
        "database.port": pg["port"],
        "database.user": settings.pg_cdc_user,
        "database.password": settings.pg_cdc_password.get_secret_value(),
        "database.dbname": pg["dbname"],
        # TLS to the WMS as the DSN asks (Debezium's names are libpq's).
        **{f"database.{k}": pg[k] for k in PG_TLS_PARAMS if k in pg},
        "topic.prefix": region.topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": region.slot_name,
        # The publication is made by infra (the CDC role owns no table to publish).
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "table.include.list": ",".join(f"public\\.{t}" for t in WMS_TABLES),
        "snapshot.mode": "initial",
        # Exact decimals in JSON without schemas: strings, not base64 bytes.
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive",
        "provide.transaction.metadata": "true",
        # A WMS TRUNCATE reaches the projection like any change (Debezium skips them by
        # default, and the projection would silently keep the rows).
        "skipped.operations": "none",
        # Each heartbeat writes a non-transactional logical-decoding message into the WAL
        # (no table: the CDC role writes none) carrying the WMS clock. It reaches the topic
        # after every transaction that committed before it, so it tells consumers that an
        # idle region is complete up to that time; Debezium's own heartbeat record cannot
        # (it goes out whenever Debezium's socket is empty, even before the WAL sender has
        # sent a commit). It also moves the slot on when other databases write the WAL.
        "heartbeat.interval.ms": str(settings.heartbeat_interval_ms),
        "heartbeat.action.query": (
            f"SELECT pg_logical_emit_message(false, '{WAL_MARK_PREFIX}', {WAL_MARK_CLOCK_SQL})"
        ),
        "message.prefix.include.list": re.escape(WAL_MARK_PREFIX),
        "max.batch.size": str(settings.debezium_max_batch_size),
        "max.queue.size": str(settings.debezium_max_queue_size),
        "poll.interval.ms": str(settings.debezium_poll_interval_ms),
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "false",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
        "topic.creation.default.retention.ms": "-1",
        "topic.creation.default.compression.type": "lz4",
        "transforms": "route",
        "transforms.route.type": "io.debezium.transforms.ByLogicalTableRouter",
        "transforms.route.topic.regex": f"(__debezium-heartbeat\\.)?{prefix}(\\..+)?",
        "transforms.route.topic.replacement": region.cdc_topic,
    }


class ConnectClient:
    """A thin client of the Kafka Connect REST API."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=settings.connect_url, timeout=timeout_s)

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise InfraError(f"Kafka Connect REST unreachable ({method} {path}): {exc}") from exc
        return resp

    def put_config(self, name: str, config: dict[str, str]) -> None:
        """Create or update a connector; PUT is idempotent."""
        resp = self._call("PUT", f"/connectors/{name}/config", json=config)
        if resp.status_code not in (200, 201):
            raise InfraError(f"registering connector {name}: {resp.status_code} {resp.text}")

    def status(self, name: str) -> dict[str, Any] | None:
        resp = self._call("GET", f"/connectors/{name}/status")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise InfraError(f"status of connector {name}: {resp.status_code} {resp.text}")
        body: dict[str, Any] = resp.json()
        return body

    def restart_failed(self, name: str) -> None:
        self._call(
            "POST",
            f"/connectors/{name}/restart",
            params={"includeTasks": "true", "onlyFailed": "true"},
        )

    def restart(self, name: str) -> None:
        self._call("POST", f"/connectors/{name}/restart", params={"includeTasks": "true"})

    def delete(self, name: str) -> None:
        self._call("DELETE", f"/connectors/{name}")

    def stop_connector(self, name: str) -> None:
        """Stop (not pause): tasks shut down, which offset changes require."""
        resp = self._call("PUT", f"/connectors/{name}/stop")
        if resp.status_code not in (200, 202, 204):
            raise InfraError(f"stopping connector {name}: {resp.status_code} {resp.text}")

    def resume(self, name: str) -> None:
        self._call("PUT", f"/connectors/{name}/resume")

    def reset_offsets(self, name: str) -> None:
        """Forget where the connector was: on resume it snapshots afresh."""
        resp = self._call("DELETE", f"/connectors/{name}/offsets")
        if resp.status_code != 200:
            raise InfraError(f"resetting offsets of {name}: {resp.status_code} {resp.text}")


def task_state(status: dict[str, Any] | None) -> str:
    """One word for a connector: RUNNING only when the connector and all tasks run."""
    if status is None:
        return "MISSING"
    states = [status["connector"]["state"], *(t["state"] for t in status.get("tasks", []))]
    if not status.get("tasks"):
        states.append("NO_TASKS")
    for bad in ("FAILED", "UNASSIGNED", "PAUSED", "STOPPED", "NO_TASKS", "RESTARTING"):
        if bad in states:
            return bad
    return "RUNNING"


def resnapshot(settings: Settings, region: Region, timeout_s: float = 60.0) -> None:
    """Re-snapshot one region (after its replication slot was lost, say) without touching
    the others: stop its connector, forget its offsets, resume. Debezium then creates the
    slot again and streams a fresh snapshot into the same topic; the projection applies it
    idempotently (row versions are LSNs)."""
    name = region.connector_name
    with ConnectClient(settings) as client:
        client.stop_connector(name)
        deadline = time.monotonic() + timeout_s
        while (client.status(name) or {}).get("connector", {}).get("state") != "STOPPED":
            if time.monotonic() > deadline:
                raise InfraError(f"connector {name} did not stop in {timeout_s:.0f}s")
            time.sleep(0.2)
        client.reset_offsets(name)
        client.resume(name)


def register_connectors(settings: Settings, timeout_s: float | None = None) -> None:
    """Register (or update) every region's connector and wait until all tasks run;
    failed tasks are restarted, so `up` also heals a connector after an outage."""
    deadline = time.monotonic() + (timeout_s or settings.start_timeout_s)
    with ConnectClient(settings) as client:
        for region in settings.region_list():
            client.put_config(region.connector_name, connector_config(settings, region))
        pending = {r.connector_name for r in settings.region_list()}
        restarted: set[str] = set()
        while pending:
            for name in sorted(pending):
                state = task_state(client.status(name))
                if state == "RUNNING":
                    pending.discard(name)
                elif state == "FAILED" and name not in restarted:
                    client.restart_failed(name)
                    restarted.add(name)
            if pending and time.monotonic() > deadline:
                details = {n: client.status(n) for n in pending}
                raise InfraError(f"connectors not running: {details}")
            if pending:
                time.sleep(0.5)
