"""The Debezium connector config carries the design's decisions."""

import re

from infra.connect import WAL_MARK_CLOCK_SQL, connector_config, task_state
from stockcdc.settings import WMS_TABLES, Settings


def _config(region: str = "eu-central") -> dict[str, str]:
    settings = Settings()
    return connector_config(settings, settings.region(region))


def test_streams_pgoutput_from_the_filtered_publication_of_every_wms_table() -> None:
    cfg = _config()
    assert cfg["plugin.name"] == "pgoutput"
    assert cfg["publication.autocreate.mode"] == "disabled"  # made by infra, filtered
    assert cfg["table.include.list"].split(",") == [f"public\\.{t}" for t in WMS_TABLES]
    assert cfg["slot.name"] == "dbz_wms_eu_central"
    assert cfg["database.user"] == "wms_cdc"


def test_transactions_heartbeats_and_exact_decimals() -> None:
    cfg = _config()
    assert cfg["provide.transaction.metadata"] == "true"
    assert int(cfg["heartbeat.interval.ms"]) > 0
    assert cfg["decimal.handling.mode"] == "string"
    assert cfg["skipped.operations"] == "none"  # truncates reach the projection


def test_heartbeats_write_a_wal_mark_and_no_table() -> None:
    cfg = _config()
    query = cfg["heartbeat.action.query"]
    # A non-transactional logical-decoding message carrying the WMS clock, nothing else.
    assert re.fullmatch(
        r"SELECT pg_logical_emit_message\(false, 'stockcdc\.heartbeat', .*\)", query
    )
    assert query.endswith(f", {WAL_MARK_CLOCK_SQL})")  # evaluated on PostgreSQL apart
    assert not re.search(r"\b(INSERT|UPDATE|DELETE|TRUNCATE|CREATE|ALTER)\b", query, re.I)
    assert re.fullmatch(cfg["message.prefix.include.list"], "stockcdc.heartbeat")


def test_one_topic_per_region_carries_data_transactions_and_heartbeats() -> None:
    cfg = _config("us-west")
    regex = re.compile(cfg["transforms.route.topic.regex"])
    assert cfg["transforms.route.topic.replacement"] == "wms.us-west.cdc"
    for topic in (
        "wms.us-west.public.inventory",
        "wms.us-west.transaction",
        "__debezium-heartbeat.wms.us-west",
        "wms.us-west.message",
    ):
        assert regex.fullmatch(topic), topic
    for other in ("wms.eu-central.public.inventory", "wms.us-westx.transaction"):
        assert not regex.fullmatch(other), other


def test_task_state_is_running_only_when_connector_and_every_task_run() -> None:
    running = {"connector": {"state": "RUNNING"}, "tasks": [{"state": "RUNNING"}]}
    assert task_state(running) == "RUNNING"
    assert task_state(None) == "MISSING"
    assert task_state({"connector": {"state": "RUNNING"}, "tasks": []}) == "NO_TASKS"
    failed = {"connector": {"state": "RUNNING"}, "tasks": [{"state": "FAILED"}]}
    assert task_state(failed) == "FAILED"


def test_database_from_the_local_cluster_when_the_region_has_no_dsn() -> None:
    cfg = _config("eu-central")
    assert (cfg["database.hostname"], cfg["database.port"]) == ("127.0.0.1", "25432")
    assert cfg["database.dbname"] == "wms"
    assert not any(k.startswith("database.ssl") for k in cfg)


def test_database_hostname_port_dbname_and_tls_from_the_region_dsn() -> None:
    dsns = {
        "eu-central": "host=wms-euc.internal port=6432 dbname=wms_eu sslmode=verify-full "
        "sslrootcert=/etc/stockcdc/pg-ca.pem",
        "us-west": "postgresql://wms-usw.internal",  # libpq defaults: port 5432, our dbname
    }
    settings = Settings.model_validate({"wms": {"dsns": dsns}, "pg_database": "wms_prod"})
    cfg = connector_config(settings, settings.region("eu-central"))
    assert cfg["database.hostname"] == "wms-euc.internal"
    assert cfg["database.port"] == "6432"
    assert cfg["database.dbname"] == "wms_eu"
    assert cfg["database.sslmode"] == "verify-full"
    assert cfg["database.sslrootcert"] == "/etc/stockcdc/pg-ca.pem"
    assert (cfg["database.user"], cfg["database.password"]) == ("wms_cdc", "cdc-dev-only")
    usw = connector_config(settings, settings.region("us-west"))
    assert (usw["database.hostname"], usw["database.port"]) == ("wms-usw.internal", "5432")
    assert usw["database.dbname"] == "wms_prod"
