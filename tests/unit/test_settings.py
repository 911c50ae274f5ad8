"""Settings come from STOCKCDC_* env vars."""

import pytest

from stockcdc.settings import Settings


def test_regions_from_a_comma_separated_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKCDC_REGIONS", "us-west, eu-central")
    monkeypatch.setenv("STOCKCDC_PG_BASE_PORT", "6000")
    s = Settings()
    assert [(r.name, r.pg_port) for r in s.region_list()] == [
        ("us-west", 6000),
        ("eu-central", 6001),
    ]


def test_secrets_do_not_print() -> None:
    s = Settings()
    assert "cdc-dev-only" not in repr(s)
    assert "cdc-dev-only" in s.pg_dsn(s.region("us-west"), "cdc")


def test_unknown_region_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown region 'mars'"):
        Settings().region("mars")
