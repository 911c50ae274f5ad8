"""The one settings object: every tunable of the project, read from `STOCKCDC_*` env vars.

Build it with :func:`get_settings` (cached) so tests can override it with
``get_settings.cache_clear()`` after changing the environment, or pass a ``Settings``
explicitly to the code under test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
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
    index: int  # position in the configured list; fixes the local cluster's port
    # Port of the local cluster `stockcdc infra` runs for the region (infra.pg_base_port +
    # index); clients connect through `conninfo`, which says the same when `local`.
    pg_port: int
    namespace: str = "wms"  # Settings.cdc_namespace: isolates a whole pipeline (tests)
    # Where the region's database is: libpq host, port and dbname, never a role (pg_dsn
    # adds the role's). Settings.region_list() always fills it.
    conninfo: str = ""
    # No DSN configured: the region is the local cluster that `stockcdc infra` runs.
    local: bool = True

    @property
    def conninfo_params(self) -> dict[str, str]:
        """`conninfo` as libpq keywords; `port` always present (libpq's default 5432)."""
        if not self.conninfo:
            raise ValueError(f"region {self.name!r} has no conninfo: use Settings.region_list()")
        params = {k: str(v) for k, v in conninfo_to_dict(self.conninfo).items()}
        params.setdefault("port", "5432")
        return params

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


def _split_commas(value: object) -> object:
    """A comma-separated env value as a tuple of its non-empty items."""
    if isinstance(value, str):
        return tuple(r.strip() for r in value.split(",") if r.strip())
    return value


class KafkaSettings(BaseModel):
    """How every Kafka client of the product, benchmarks and tests reaches the brokers
    (env `STOCKCDC_KAFKA__<FIELD>`); build clients with `Settings.kafka_client_config()`
    so TLS and SASL apply to all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Comma-separated host:port list; empty: the local broker `stockcdc infra` runs.
    bootstrap_servers: Annotated[tuple[str, ...], NoDecode] = ()
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL_* protocols: PLAIN or SCRAM with a username and password.
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # SSL and SASL_SSL: CA bundle to verify the brokers (unset: the system's), and a client
    # certificate and key for mutual TLS.
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        return _split_commas(value)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        """Refuse at start-up what kafka-python would fail on later, or silently ignore."""
        sasl = self.security_protocol.startswith("SASL_")
        password = self.sasl_password.get_secret_value() if self.sasl_password else ""
        values = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username,
            "sasl_password": password,
        }
        given = [name for name, value in values.items() if value]  # empty counts as unset
        if sasl and len(given) < 3:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password (STOCKCDC_KAFKA__SASL_*)"
            )
        if not sasl and given:
            raise ValueError(
                f"{', '.join(given)} set but security_protocol is {self.security_protocol}: "
                "use SASL_SSL or SASL_PLAINTEXT"
            )
        files = [f for f in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, f)]
        if files and not self.security_protocol.endswith("SSL"):
            raise ValueError(
                f"{', '.join(files)} set but security_protocol is {self.security_protocol}: "
                "use SSL or SASL_SSL"
            )
        return self


class ConnectSettings(BaseModel):
    """The Kafka Connect REST API the Debezium connectors are registered with (env
    `STOCKCDC_CONNECT__URL`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # http(s)://host:port; unset: the local worker `stockcdc infra` runs.
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"Connect URL {value!r}: expected http(s)://host:port")
        return value.rstrip("/") if value else value


class WmsSettings(BaseModel):
    """Where each regional WMS database is (env `STOCKCDC_WMS__DSNS`, a JSON object)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Region → libpq conninfo or URI with host, port (default 5432) and dbname (default
    # pg_database), e.g. {"us-west": "host=10.0.0.5 port=5432 dbname=wms sslmode=require"}.
    # No role: pg_dsn adds the role's user and password, so one DSN serves all three
    # roles and the Debezium connector. A region without a DSN is the local cluster.
    dsns: dict[str, str] = {}

    @field_validator("dsns")
    @classmethod
    def _check_dsns(cls, value: dict[str, str]) -> dict[str, str]:
        for region, dsn in value.items():
            try:
                params = conninfo_to_dict(dsn)
            except psycopg.ProgrammingError as exc:
                raise ValueError(f"DSN of region {region!r}: {exc}") from None
            roles = sorted({"user", "password", "passfile"} & params.keys())
            if roles:
                raise ValueError(
                    f"DSN of region {region!r} sets {', '.join(roles)}: roles come from "
                    "STOCKCDC_PG_{ADMIN,CDC,APP}_USER/_PASSWORD"
                )
            host = str(params.get("host", ""))
            # Debezium takes one hostname and port: no Unix socket, no multi-host list.
            if not host or host.startswith("/") or "," in host + str(params.get("port", "")):
                raise ValueError(
                    f"DSN of region {region!r}: needs one TCP host (and port), got {dsn!r}"
                )
        return value


class LocalInfraSettings(BaseModel):
    """The services `stockcdc infra` (and the demo and the test run) start on this
    machine: their ports, heaps and JVM (env `STOCKCDC_INFRA__<FIELD>`). The product
    reads them only as the fallback of an unset Kafka, Connect or region DSN setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Regional clusters: region i listens on pg_host:pg_base_port + i. Below the ephemeral
    # range (32768+): a client socket can never hold our port.
    pg_host: str = "127.0.0.1"
    pg_base_port: int = 25431
    pg_max_slot_wal_keep_size: str = "4GB"
    # Local clusters trade crash safety for speed (fsync off); never in production.
    pg_durable: bool = False
    # Kafka (KRaft, single node) and Kafka Connect (distributed), on 127.0.0.1.
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    connect_port: int = 18083
    kafka_heap: str = "768m"
    connect_heap: str = "1g"
    java_home: Path | None = None

    @property
    def kafka_bootstrap(self) -> str:
        """The local broker's address."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        """The local Connect worker's REST API."""
        return f"http://127.0.0.1:{self.connect_port}"


#: Top-level variables that moved into `infra`: still set, they would be ignored silently
#: (and a client would reach the default port), so Settings refuses them.
_MOVED_TO_INFRA = tuple(f"STOCKCDC_{f.upper()}" for f in LocalInfraSettings.model_fields)


class Settings(BaseSettings):
    """Project settings; env vars are `STOCKCDC_<FIELD>` (e.g. `STOCKCDC_STATE_DIR`), and
    `STOCKCDC_<GROUP>__<FIELD>` for the nested groups (e.g. `STOCKCDC_KAFKA__SASL_MECHANISM`)."""

    model_config = SettingsConfigDict(
        env_prefix="STOCKCDC_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    # Where every service keeps its data, config, logs and pid files.
    state_dir: Path = Path(".state")

    # Connections of a deployment; unset, they name the services of `infra`.
    kafka: KafkaSettings = KafkaSettings()
    connect: ConnectSettings = ConnectSettings()
    wms: WmsSettings = WmsSettings()
    infra: LocalInfraSettings = LocalInfraSettings()

    # Regional WMS databases: where each is comes from wms.dsns (else the local cluster).
    regions: Annotated[tuple[str, ...], NoDecode] = ("us-west", "eu-central", "ap-southeast")
    # Database of a region whose DSN names none (and of the local clusters).
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
    # The stock figures of a batch are written at once; its WMS rows (drill-downs: lots,
    # serials, movements; `watermarks`) wait up to this long, to go in fewer, larger
    # inserts with later batches' (every insert costs a part per table whatever its
    # size). 0: each batch writes everything together.
    rows_max_ms: NonNegativeInt = 1000
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
        return _split_commas(value)

    @model_validator(mode="before")
    @classmethod
    def _refuse_moved_vars(cls, data: Any) -> Any:
        moved = sorted(k.upper() for k in os.environ if k.upper() in _MOVED_TO_INFRA)
        if moved:
            raise ValueError(
                f"{', '.join(moved)} moved into the local-infra group: "
                + ", ".join(m.replace("STOCKCDC_", "STOCKCDC_INFRA__") for m in moved)
            )
        return data

    @model_validator(mode="after")
    def _dsns_name_regions(self) -> Settings:
        unknown = sorted(set(self.wms.dsns) - set(self.regions))
        if unknown:
            raise ValueError(
                f"STOCKCDC_WMS__DSNS names {', '.join(unknown)}, not in STOCKCDC_REGIONS "
                f"({', '.join(self.regions)})"
            )
        return self

    @property
    def state_path(self) -> Path:
        return self.state_dir.resolve()

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{self.state_path / 'clickhouse'}"

    def kafka_client_config(self) -> dict[str, Any]:
        """Keyword arguments every KafkaConsumer, KafkaProducer and KafkaAdminClient is
        built with: the brokers and their TLS/SASL settings (validated at start-up)."""
        k = self.kafka
        config: dict[str, Any] = {
            "bootstrap_servers": list(k.bootstrap_servers) or [self.infra.kafka_bootstrap],
            "security_protocol": k.security_protocol,
        }
        if k.security_protocol.startswith("SASL_"):
            assert k.sasl_password is not None  # _check_security: all three are set
            config["sasl_mechanism"] = k.sasl_mechanism
            config["sasl_plain_username"] = k.sasl_username  # PLAIN and SCRAM alike
            config["sasl_plain_password"] = k.sasl_password.get_secret_value()
        if k.security_protocol.endswith("SSL"):
            config["ssl_check_hostname"] = k.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if (path := getattr(k, name)) is not None:
                    config[name] = str(path)
        return config

    @property
    def connect_url(self) -> str:
        return self.connect.url or self.infra.connect_url

    def region_list(self) -> list[Region]:
        return [self._region(i, n) for i, n in enumerate(self.regions)]

    def _region(self, index: int, name: str) -> Region:
        """A region at its DSN (its dbname defaulting to pg_database), else the local
        cluster: infra.pg_host, infra.pg_base_port + index, pg_database."""
        local_port = self.infra.pg_base_port + index
        dsn = self.wms.dsns.get(name)
        if dsn is None:
            conninfo = make_conninfo(
                host=self.infra.pg_host, port=str(local_port), dbname=self.pg_database
            )
        else:
            params = conninfo_to_dict(dsn)
            params.setdefault("dbname", self.pg_database)
            conninfo = make_conninfo("", **params)
        return Region(
            name=name,
            index=index,
            pg_port=local_port,
            namespace=self.cdc_namespace,
            conninfo=conninfo,
            local=dsn is None,
        )

    def region(self, name: str) -> Region:
        for r in self.region_list():
            if r.name == name:
                return r
        raise KeyError(f"unknown region {name!r}; configured: {', '.join(self.regions)}")

    def pg_dsn(self, region: Region, role: str = "admin", dbname: str | None = None) -> str:
        """libpq connection string for one of the three roles of a region: the region's
        conninfo (its DSN or the local cluster), another database if given, the role."""
        user, password = {
            "admin": (self.pg_admin_user, self.pg_admin_password),
            "cdc": (self.pg_cdc_user, self.pg_cdc_password),
            "app": (self.pg_app_user, self.pg_app_password),
        }[role]
        params = region.conninfo_params
        if dbname:
            params["dbname"] = dbname
        return make_conninfo(**params, user=user, password=password.get_secret_value())


@cache
def get_settings() -> Settings:
    return Settings()
