"""migrate is idempotent, refuses edited files, and renders the cluster variant."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from read_model.ddl import DDL_DIR, render
from read_model.errors import MigrationError
from read_model.migrate import discover, migrate, statements


def test_second_run_applies_nothing(ch: Client) -> None:
    assert migrate(ch) == []
    versions = ch.query("SELECT DISTINCT version FROM _schema_migrations ORDER BY version")
    assert [r[0] for r in versions.result_rows] == [m.version for m in discover()]


def test_edited_applied_file_is_refused(ch: Client, tmp_path: Path) -> None:
    for m in discover():
        (tmp_path / m.path.name).write_text(m.template)
    first = sorted(tmp_path.glob("001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(ch, directory=tmp_path)


def test_cluster_rendering() -> None:
    for m in discover(DDL_DIR):
        local = render(m.template, None)
        clustered = render(m.template, "wms")
        assert "${" not in local
        assert "ON CLUSTER" not in local
        assert "Replicated" not in local
        for stmt in statements(clustered):
            if stmt.startswith("INSERT INTO"):
                continue  # a backfill: runs once, its rows replicated like any insert
            assert "ON CLUSTER `wms`" in stmt.split("AS", 1)[0] or "ON CLUSTER `wms`" in stmt
            if "MergeTree" in stmt:
                # every MergeTree family engine becomes its Replicated variant
                assert "ENGINE = Replicated" in stmt
                assert "ENGINE = ReplicatedReplicated" not in stmt
            elif "ENGINE = Memory" in stmt:
                # the figure watermarks, node-local and lost on a restart by design (018)
                assert stmt.startswith("CREATE TABLE IF NOT EXISTS _figure_watermark_max ON")
            elif "ENGINE" in stmt:
                # the node-local point tables, which readers skip on a cluster (010, 011, 013)
                assert re.match(r"CREATE TABLE IF NOT EXISTS \w+_point ON CLUSTER", stmt)
                assert "ENGINE = EmbeddedRocksDB" in stmt
