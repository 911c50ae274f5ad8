"""Settings come from STOCKCDC_* env vars; nested groups from STOCKCDC_<GROUP>__<FIELD>."""

import ast
import json
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from stockcdc.settings import Settings


def _dsn(
    s: Settings, region: str, role: str = "admin", dbname: str | None = None
) -> dict[str, str]:
    return {
        k: str(v) for k, v in conninfo_to_dict(s.pg_dsn(s.region(region), role, dbname)).items()
    }


def test_regions_from_a_comma_separated_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCDC_REGIONS", "us-west, eu-central")
    monkeypatch.setenv("STOCKCDC_INFRA__PG_BASE_PORT", "6000")
    s = Settings()
    assert [(r.name, r.pg_port) for r in s.region_list()] == [
        ("us-west", 6000),
        ("eu-central", 6001),
    ]


def test_secrets_do_not_print() -> None:
    kafka = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "u",
        "sasl_password": "kafka-secret",
    }
    s = Settings.model_validate({"kafka": kafka})
    assert "cdc-dev-only" not in repr(s)
    assert "kafka-secret" not in repr(s)
    assert "cdc-dev-only" in s.pg_dsn(s.region("us-west"), "cdc")


def test_unknown_region_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown region 'mars'"):
        Settings().region("mars")


def test_unset_connections_name_the_local_infra() -> None:
    s = Settings()
    assert s.kafka_client_config() == {
        "bootstrap_servers": ["127.0.0.1:19092"],
        "security_protocol": "PLAINTEXT",
    }
    assert s.connect_url == "http://127.0.0.1:18083"
    assert all(r.local for r in s.region_list())
    assert _dsn(s, "eu-central", "app") == {
        "host": "127.0.0.1",
        "port": "25432",
        "dbname": "wms",
        "user": "wms_app",
        "password": "app-dev-only",
    }
    assert _dsn(s, "us-west", dbname="postgres")["dbname"] == "postgres"


def test_local_infra_group_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAFKA_PORT": "29092",
        "CONNECT_PORT": "28083",
        "PG_HOST": "127.0.0.2",
        "PG_BASE_PORT": "26000",
        "PG_DURABLE": "true",
        "KAFKA_HEAP": "2g",
    }.items():
        monkeypatch.setenv(f"STOCKCDC_INFRA__{name}", value)
    s = Settings()
    assert s.infra.pg_durable
    assert s.infra.kafka_heap == "2g"
    assert s.kafka_client_config()["bootstrap_servers"] == ["127.0.0.1:29092"]
    assert s.connect_url == "http://127.0.0.1:28083"
    assert (_dsn(s, "ap-southeast")["host"], _dsn(s, "ap-southeast")["port"]) == (
        "127.0.0.2",
        "26002",
    )


def test_a_moved_local_infra_variable_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STOCKCDC_KAFKA_PORT", "29092")
    with pytest.raises(ValidationError, match="STOCKCDC_INFRA__KAFKA_PORT"):
        Settings()


def test_kafka_bootstrap_list_and_sasl_ssl_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "BOOTSTRAP_SERVERS": "b1.kafka:9093, b2.kafka:9093,",
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_MECHANISM": "SCRAM-SHA-512",
        "SASL_USERNAME": "stockcdc",
        "SASL_PASSWORD": "s3cret",
        "SSL_CAFILE": "/etc/stockcdc/ca.pem",
        "SSL_CHECK_HOSTNAME": "false",
    }.items():
        monkeypatch.setenv(f"STOCKCDC_KAFKA__{name}", value)
    config = Settings().kafka_client_config()
    assert config == {
        "bootstrap_servers": ["b1.kafka:9093", "b2.kafka:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "stockcdc",
        "sasl_plain_password": "s3cret",
        "ssl_check_hostname": False,
        "ssl_cafile": "/etc/stockcdc/ca.pem",
    }
    # Every key is one the three client classes know (they refuse unknown ones).
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        assert set(config) <= set(client.DEFAULT_CONFIG), client


def test_every_kafka_client_is_built_with_the_kafka_client_config() -> None:
    """A client given only bootstrap_servers would silently drop TLS and SASL."""
    root = Path(__file__).resolve().parents[2]
    clients = {"KafkaConsumer", "KafkaProducer", "KafkaAdminClient"}
    found, bare = 0, []
    for path in sorted(root.glob("[!.]*/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in clients:
                continue
            found += 1
            if not any(
                k.arg is None
                and isinstance(k.value, ast.Call)
                and isinstance(k.value.func, ast.Attribute)
                and k.value.func.attr == "kafka_client_config"
                for k in node.keywords
            ):
                bare.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found > 10  # the walk sees the product, the benchmarks and the tests
    assert not bare, f"Kafka clients without **settings.kafka_client_config(): {bare}"


def test_mutual_tls_without_sasl() -> None:
    kafka = {"security_protocol": "SSL", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}
    s = Settings.model_validate({"kafka": kafka})
    config = s.kafka_client_config()
    assert (config["ssl_certfile"], config["ssl_keyfile"]) == ("/c.pem", "/k.pem")
    assert not any(k.startswith("sasl") for k in config)


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "SASL_SSL needs sasl_mechanism, sasl_username and sasl_password",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": "p"},
            "SASL_PLAINTEXT needs sasl_mechanism",
        ),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"},
            "set but security_protocol is PLAINTEXT: use SASL_SSL or SASL_PLAINTEXT",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password": "p",
                "ssl_cafile": "/ca.pem",
            },
            "ssl_cafile set but security_protocol is SASL_PLAINTEXT: use SSL or SASL_SSL",
        ),
        ({"security_protocol": "SASL_SCRAM"}, "security_protocol"),
    ],
)
def test_incomplete_or_ignored_kafka_security_is_a_settings_error(
    kafka: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({"kafka": kafka})


def test_incomplete_sasl_from_env_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCDC_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("STOCKCDC_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STOCKCDC_KAFKA__SASL_USERNAME", "stockcdc")
    monkeypatch.setenv("STOCKCDC_KAFKA__SASL_PASSWORD", "")
    with pytest.raises(ValidationError, match="needs sasl_mechanism"):
        Settings()


def test_connect_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCDC_CONNECT__URL", "https://connect.internal:8083/")
    assert Settings().connect_url == "https://connect.internal:8083"
    monkeypatch.setenv("STOCKCDC_CONNECT__URL", "connect.internal:8083")
    with pytest.raises(ValidationError, match="expected http"):
        Settings()


def test_a_dsn_per_region_from_json_env(monkeypatch: pytest.MonkeyPatch) -> None:
    dsns = {
        "us-west": "host=10.0.0.5 port=6432 dbname=wms_usw sslmode=verify-full",
        "eu-central": "postgresql://wms-euc.internal/?sslmode=require",  # no port, no dbname
    }
    monkeypatch.setenv("STOCKCDC_WMS__DSNS", json.dumps(dsns))
    s = Settings()
    assert _dsn(s, "us-west", "cdc") == {
        "host": "10.0.0.5",
        "port": "6432",
        "dbname": "wms_usw",
        "sslmode": "verify-full",
        "user": "wms_cdc",
        "password": "cdc-dev-only",
    }
    assert _dsn(s, "us-west", dbname="postgres")["dbname"] == "postgres"
    euc = _dsn(s, "eu-central", "app")
    assert (euc["host"], euc["port"], euc["dbname"]) == ("wms-euc.internal", "5432", "wms")
    # A region without a DSN stays the local cluster.
    assert [r.local for r in s.region_list()] == [False, False, True]
    assert (_dsn(s, "ap-southeast")["host"], _dsn(s, "ap-southeast")["port"]) == (
        "127.0.0.1",
        "25433",
    )


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("host=db user=wms_cdc", "sets user: roles come from STOCKCDC_PG_"),
        ("postgresql://admin:pw@db/wms", "sets password, user"),
        ("dbname=wms", "needs one TCP host"),
        ("host=/var/run/postgresql dbname=wms", "needs one TCP host"),
        ("host=a,b port=5432,5433", "needs one TCP host"),
        ("host=db bogus=1", "DSN of region 'us-west'"),
    ],
)
def test_a_bad_region_dsn_is_a_settings_error(dsn: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings.model_validate({"wms": {"dsns": {"us-west": dsn}}})


def test_a_dsn_for_an_unconfigured_region_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="names us-east, not in STOCKCDC_REGIONS"):
        Settings.model_validate({"wms": {"dsns": {"us-east": "host=db"}}})
