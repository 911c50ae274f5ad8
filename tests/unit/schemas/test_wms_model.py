"""The WMS model is parsed from schema.sql and the generated DDL files are current."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from read_model.ddl import DDL_DIR, GENERATED
from schemas.wms_model import FULL_BEFORE_TABLES, PG_TYPES, WMS_MODEL
from stockcdc.settings import WMS_TABLES


def test_every_wms_table_is_modelled_with_an_id_key() -> None:
    assert tuple(WMS_MODEL) == WMS_TABLES
    assert all(t.primary_key == ("id",) for t in WMS_MODEL.values())


def test_exact_clickhouse_types() -> None:
    sku = WMS_MODEL["sku"]
    assert sku.column("weight_kg").ch_type == "Nullable(Decimal(10, 3))"
    assert sku.column("unit_cost").ch_type == "Nullable(Decimal(12, 4))"
    assert sku.column("attributes").ch_type == "String"
    assert sku.column("id").ch_type == "Int64"
    assert WMS_MODEL["lot"].column("expiry_date").ch_type == "Nullable(Date32)"
    assert WMS_MODEL["location"].column("sellable").ch_type == "Bool"
    assert WMS_MODEL["warehouse"].column("country").pg_type == "char(2)"
    assert WMS_MODEL["inventory"].column("in_date").ch_type == "DateTime64(6, 'UTC')"
    assert WMS_MODEL["inventory"].column("qty_on_hand").nullable is False
    assert WMS_MODEL["inventory"].column("lot_id").nullable is True


def test_column_defaults_are_parsed() -> None:
    inventory = WMS_MODEL["inventory"]
    assert [c.name for c in inventory.columns if c.has_default] == [
        "id", "qty_allocated", "in_date", "last_movement_at", "version"
    ]  # fmt: skip
    assert not inventory.column("status").has_default
    assert WMS_MODEL["owner"].column("status").has_default  # DEFAULT 'ACTIVE' CHECK (...)


def test_the_tables_needing_full_before_images_are_the_invertible_sums_inputs() -> None:
    """OPERATIONS.md "Stock figures": sums over balance rows and inbound lines."""
    assert FULL_BEFORE_TABLES == ("inventory", "inbound_line")


@pytest.mark.parametrize(
    ("pg", "raw", "expected"),
    [
        ("numeric", "12.3400", Decimal("12.3400")),
        ("date", 20881, date(2027, 3, 4)),
        (
            "timestamptz",
            "2026-11-27T07:56:15.500298Z",
            datetime(2026, 11, 27, 7, 56, 15, 500298, UTC),
        ),
        ("boolean", True, True),
        ("jsonb", '{"a": [1, 2.50]}', '{"a": [1, 2.50]}'),
        ("bigint", 7, 7),
    ],
)
def test_decoders(pg: str, raw: object, expected: object) -> None:
    assert PG_TYPES[pg].decoder(raw) == expected


@pytest.mark.parametrize(("pg", "raw"), [("bigint", True), ("numeric", 1.5), ("date", "x")])
def test_decoders_refuse_wrong_shapes(pg: str, raw: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        PG_TYPES[pg].decoder(raw)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_ddl_is_current(name: str) -> None:
    assert (DDL_DIR / name).read_text() == GENERATED[name](), "run `python -m read_model.ddl`"
