"""The one settings object: every tunable of the project, read from `STOCKCDC_*` env vars.

Build it with :func:`get_settings` (cached) so tests can override it with
``get_settings.cache_clear()`` after changing the environment, or pass a ``Settings``
explicitly to the code under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import PositiveInt, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Every table of the WMS schema, in dependency order; all of them are replicated.
WMS_TABLES: tuple[str, ...] = (
    "warehouse",
    "owner",
    "sku",
    "location",
    "lot",
    "container",
    "inventory",
    "inbound_order",
    "inbound_line",
    "outbound_order",
    "outbound_line",
    "allocation",
    "serial_number",
    "inventory_hold",
    "inventory_txn",
)


@dataclass(frozen=True)
class Region:
    """One regional WMS: its database, its Debezium connector and its Kafka topic."""

    name: str  # e.g. "us-west"
    index: int  # position in the configured list; fixes the port
    pg_port: int
    namespace: str = "wms"  # Settings.cdc_namespace: isolates a whole pipeline (tests)

    @property
    def slug(self) -> str:
        """Identifier-safe form of the name (slots, publications, SQL)."""
        return self.name.replace("-", "_")

    @property
    def topic_prefix(self) -> str:
        """Debezium `topic.prefix`: the logical server name of the region."""
        return f"{self.namespace}.{self.name}"

    @property
    def cdc_topic(self) -> str:
        """The one topic that carries the region's data events, BEGIN/END and heartbeats
        in commit order (decision 4: transactions applied whole and in order)."""
        return f"{self.namespace}.{self.name}.cdc"

    @property
    def connector_name(self) -> str:
        return f"{self.namespace}-{self.name}"

    @property
    def slot_name(self) -> str:
        return f"dbz_{self.namespace}_{self.slug}"


#: DEV-ONLY API keys (their clear text is in query_api/auth.py DEMO_KEYS and the README):
#: an OMS key, a seller key for SELLER-0001 and a BI key. Never deploy with these.
DEV_API_KEYS: tuple[str, ...] = (
    "oms:*:321537800f83ae5e721ca5594f727e2c5ba6de10b355a59019332903f8792bbe",
    "seller:SELLER-0001:ec6559e7ec4653425a4d8aecf54c568a0cb13baf95e2d2bda55246b898defe36",
    "bi:*:0118ecbd156e294d6bfecc8494132c5578a48c443bd729d1ee00bd5227287676",
)


class Settings(BaseSettings):
    """Project settings; env vars are `STOCKCDC_<FIELD>` (e.g. `STOCKCDC_STATE_DIR`)."""

    model_config = SettingsConfigDict(env_prefix="STOCKCDC_", frozen=True, extra="ignore")

    # Where every service keeps its data, config, logs and pid files.
    state_dir: Path = Path(".state")

    # Regional WMS PostgreSQL clusters: region i listens on pg_base_port + i.
    regions: Annotated[tuple[str, ...], NoDecode] = ("us-west", "eu-central", "ap-southeast")
    pg_host: str = "127.0.0.1"
    # Below the ephemeral range (32768+): a client socket can never hold our port.
    pg_base_port: int = 25431
    pg_database: str = "wms"
    # Names the pipeline: topics `<ns>.<region>.cdc`, connectors `<ns>-<region>`, slots
    # `dbz_<ns>_<region>`. Tests give each run its own namespace and database.
    cdc_namespace: str = "wms"
    pg_admin_user: str = "wms_admin"
    pg_admin_password: SecretStr = SecretStr("admin-dev-only")
    pg_cdc_user: str = "wms_cdc"
    pg_cdc_password: SecretStr = SecretStr("cdc-dev-only")
    pg_app_user: str = "wms_app"
    pg_app_password: SecretStr = SecretStr("app-dev-only")
    pg_max_slot_wal_keep_size: str = "4GB"
    # Local clusters trade crash safety for speed (fsync off); never in production.
    pg_durable: bool = False

    # Kafka (KRaft, single node) and Kafka Connect (distributed).
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    connect_port: int = 18083
    kafka_heap: str = "768m"
    connect_heap: str = "1g"
    java_home: Path | None = None

    # Debezium connector tuning.
    heartbeat_interval_ms: int = 1000
    debezium_max_batch_size: int = 8192
    debezium_max_queue_size: int = 65536
    debezium_poll_interval_ms: int = 50

    # ClickHouse read model: chdb://<path> (embedded, one process per path) or http(s)://.
    # Unset: embedded chDB under the state dir (`chdb://<state>/clickhouse`).
    clickhouse_url: str | None = None
    # Server mode on a cluster: DDL runs ON CLUSTER with Replicated* engines.
    clickhouse_cluster: str | None = None

    # Projector (cdc_consumers): one consumer group shares the regions' topics.
    consumer_group: str = "stockcdc-projector"
    deadletter_topic: str = "stockcdc.deadletter"
    # A batch is written when it holds this many rows or is this old, whichever first.
    batch_max_rows: int = 50_000
    batch_max_ms: int = 100
    max_poll_records: int = 10_000
    # Changes of one open transaction kept in memory; a larger one (a seed while capture
    # runs, a bulk update) spills the rest to disk under the state dir and is written in
    # chunks of this size, still visible whole (cdc_consumers/spill.py).
    max_transaction_rows_in_memory: PositiveInt = 100_000
    # Backoff of retried ClickHouse writes (transient errors), doubling up to the max.
    write_retry_initial_ms: int = 100
    write_retry_max_ms: int = 10_000
    # Longest time the consumer may go without polling before the group drops it. The
    # loop keeps polling (partitions paused) while the writer is behind, so a ClickHouse
    # outage longer than this does not make the member leave the group.
    consumer_max_poll_interval_ms: int = 300_000
    # A WAL mark (heartbeat action) may be at most this far ahead of the time Debezium
    # read it (clock skew between the WMS and Connect hosts); later ones are dead-lettered.
    wal_mark_max_skew_ms: int = 60_000
    # Largest key + value sent whole to the dead-letter topic (below the producer's 1 MiB
    # max_request_size and the topic's default max.message.bytes, headers included);
    # larger records are cut to it, with headers naming their size, sha256 and source.
    deadletter_max_bytes: int = 900_000
    # Reconciliation (read_model/reconcile.py): how long a region may take to reach the
    # WMS snapshot's point before it counts as not comparable, and how often the job in
    # the projector process runs (0: never; `stockcdc reconcile` runs it once).
    reconcile_timeout_s: float = 60.0
    reconcile_interval_s: float = 0.0
    # `stockcdc project` serves Prometheus metrics on this port (0: off); `stockcdc serve`
    # has them on the API's /metrics.
    projector_metrics_port: int = 0

    # Seconds to wait for a service to come up.
    start_timeout_s: float = 180.0

    # Query API (query_api/): where `stockcdc serve` listens.
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # API keys, stored hashed: "<scope>:<owner or *>:<sha256 hex of the key>", comma
    # separated; scope is oms (every owner), seller (one owner) or bi (SQL, every owner).
    # `stockcdc apikey create` prints new lines. The default holds the DEV-ONLY demo keys
    # of query_api/auth.py (DEMO_KEYS); set STOCKCDC_API_KEYS to replace them.
    api_keys: Annotated[tuple[str, ...], NoDecode] = DEV_API_KEYS
    # HMAC secret signing pagination cursors (opaque, tamper-evident). Dev default only.
    api_cursor_secret: SecretStr = SecretStr("cursor-secret-dev-only")
    # `min_as_of`: longest wait for a region's watermark to pass the asked time (→ 504).
    api_min_as_of_timeout_ms: int = 5_000
    # Requests refused before any route runs: body bytes (413) and URL length (414).
    api_max_body_bytes: int = 1_000_000
    api_max_url_chars: int = 8_192
    api_min_as_of_poll_ms: int = 25
    # /v1/freshness states: live when lag <= this; catching_up when behind but the
    # projector wrote a watermark within this time; stale otherwise.
    api_live_lag_ms: int = 5_000
    # Watermarks for `freshness` and `max_staleness_ms` are re-read this often in the
    # background, off the requests' path (0: every request reads them; `min_as_of` waits
    # always re-read them).
    api_watermark_cache_ms: int = 100
    # ClickHouse clients the API queries through (each client serializes its own calls;
    # the projector has its own). chDB uses at most one per core: point reads scale with
    # cores (254 → 570 reads/s with two on 2 cores), more only queue inside the engine.
    api_clickhouse_pool: int = 4

    # BI SQL (`POST /v1/sql`, read_model/bi.py): limits the engine enforces on every BI
    # query (readonly session: a query cannot raise them), and where BI queries go
    # (unset: the read model's URL; in server mode give it the BI user's credentials).
    bi_clickhouse_url: str | None = None
    bi_max_execution_time_s: float = 30.0
    bi_max_memory_bytes: int = 1_000_000_000
    bi_max_result_rows: int = 1_000_000
    bi_max_result_bytes: int = 256_000_000
    bi_max_sql_chars: int = 100_000
    # Daily stock snapshots (`bi_stock_history`): how often the API's job looks for
    # finished days to snapshot (0: never; `stockcdc bi snapshot` backfills), and how many
    # past days it fills when some are missing.
    bi_snapshot_interval_s: float = 300.0
    bi_snapshot_backfill_days: int = 7
    # Server-mode BI access DDL (`stockcdc bi access-ddl`): the database of the BI
    # relations, users that see every owner, and per-seller users `<user>=<owner code>`
    # (row policies on owner); comma separated.
    bi_database: str = "default"
    bi_users: Annotated[tuple[str, ...], NoDecode] = ("bi_api",)
    bi_seller_users: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("regions", "api_keys", "bi_users", "bi_seller_users", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(r.strip() for r in value.split(",") if r.strip())
        return value

    @property
    def state_path(self) -> Path:
        return self.state_dir.resolve()

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{self.state_path / 'clickhouse'}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    def region_list(self) -> list[Region]:
        return [
            Region(name=n, index=i, pg_port=self.pg_base_port + i, namespace=self.cdc_namespace)
            for i, n in enumerate(self.regions)
        ]

    def region(self, name: str) -> Region:
        for r in self.region_list():
            if r.name == name:
                return r
        raise KeyError(f"unknown region {name!r}; configured: {', '.join(self.regions)}")

    def pg_dsn(self, region: Region, role: str = "admin", dbname: str | None = None) -> str:
        """libpq connection string for one of the three roles of a region."""
        user, password = {
            "admin": (self.pg_admin_user, self.pg_admin_password),
            "cdc": (self.pg_cdc_user, self.pg_cdc_password),
            "app": (self.pg_app_user, self.pg_app_password),
        }[role]
        return (
            f"host={self.pg_host} port={region.pg_port} dbname={dbname or self.pg_database} "
            f"user={user} password={password.get_secret_value()}"
        )


@cache
def get_settings() -> Settings:
    return Settings()
