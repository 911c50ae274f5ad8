"""A whole CDC pipeline of its own, beside the main one: for tests and benchmarks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
from kafka import KafkaAdminClient
from psycopg import sql

from cdc_consumers.topics import ensure_topics
from infra.connect import ConnectClient, register_connectors
from infra.postgres import ensure_publication, grant_roles, load_wms_schema
from stockcdc.settings import Settings


class IsolatedPipeline:
    """A whole CDC pipeline of its own: per region a fresh WMS database, Debezium
    connector, replication slot and topic (namespace `t<id>`), a consumer group and an
    embedded ClickHouse path. Seed first, then `start_capture()`: the seed arrives as
    Debezium's initial snapshot, later commits stream."""

    def __init__(self, base: Settings, tmp: Path) -> None:
        uid = uuid.uuid4().hex[:8]
        self.settings = base.model_copy(
            update={
                "cdc_namespace": f"t{uid}",
                "pg_database": f"t_{uid}",
                "consumer_group": f"projector-t{uid}",
                "clickhouse_url": f"chdb://{tmp / 'clickhouse'}",
                "deadletter_topic": f"t{uid}.deadletter",
            }
        )
        self.regions = self.settings.region_list()
        for region in self.regions:
            with psycopg.connect(base.pg_dsn(region, dbname="postgres"), autocommit=True) as c:
                c.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.pg_database))
                )
            with psycopg.connect(self.settings.pg_dsn(region), autocommit=True) as c:
                load_wms_schema(c)
                grant_roles(c, self.settings)
                ensure_publication(c)

    def start_capture(self) -> None:
        """Create the topics, then register the connectors. Debezium would create a
        topic only with its first record, so offsets read right after would miss it."""
        ensure_topics(self.settings)
        register_connectors(self.settings)

    def close(self) -> None:
        s = self.settings
        with ConnectClient(s) as client:
            for region in self.regions:
                client.delete(region.connector_name)
        for region in self.regions:
            with psycopg.connect(s.pg_dsn(region, dbname="postgres"), autocommit=True) as c:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # the task releases its slot on stop
                    row = c.execute(
                        "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                        (region.slot_name,),
                    ).fetchone()
                    if row is None:
                        break
                    if not row[0]:
                        c.execute("SELECT pg_drop_replication_slot(%s)", (region.slot_name,))
                        break
                    time.sleep(0.2)
                c.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(s.pg_database)
                    )
                )
        admin = KafkaAdminClient(**s.kafka_client_config())
        try:
            ours = [t for t in admin.list_topics() if t.startswith(f"{s.cdc_namespace}.")]
            if ours:
                admin.delete_topics(ours)
        finally:
            admin.close()
