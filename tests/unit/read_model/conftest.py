"""chDB fixtures: one on-disk read model per test session (chDB allows one path per
process), migrated once; tests isolate themselves by using their own region names."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from read_model.client import make_client
from read_model.migrate import migrate
from stockcdc.settings import Settings


@pytest.fixture(scope="session")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    path: Path = tmp_path_factory.mktemp("chdb")
    client = make_client(Settings(), f"chdb://{path}")
    migrate(client)
    yield client
    client.close()


@pytest.fixture
def region() -> str:
    """A region name no other test uses: its rows and watermark are this test's own."""
    return f"t-{uuid.uuid4().hex[:10]}"
