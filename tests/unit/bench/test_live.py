"""A benchmark's child process gets exactly the parent's settings through the environment."""

import pytest

from bench.live import settings_env
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
