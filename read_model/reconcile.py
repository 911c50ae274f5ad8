"""Row-for-row comparison of the projection with a regional WMS database.

Used by the projection tests and, later, by the reconciliation job. Values are compared
in one canonical form (UTC datetimes, Decimals, parsed JSON), so a difference is a real
difference, reported down to the keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from clickhouse_connect.driver.client import Client
from psycopg import sql

from schemas.wms_model import WMS_MODEL, TableSpec

Row = tuple[object, ...]


@dataclass
class TableDiff:
    """Differences of one table of one region, by primary key."""

    region: str
    table: str
    source_rows: int = 0
    projected_rows: int = 0
    missing: list[tuple[object, ...]] = field(default_factory=list)  # in WMS, not projected
    unexpected: list[tuple[object, ...]] = field(default_factory=list)  # projected only
    different: list[tuple[tuple[object, ...], Row, Row]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.different)

    def summary(self, limit: int = 5) -> str:
        return (
            f"{self.region}.{self.table}: {self.source_rows} source / {self.projected_rows} "
            f"projected; missing {self.missing[:limit]}, unexpected {self.unexpected[:limit]}, "
            f"different {self.different[:limit]}"
        )


def _canon(value: object, base_type: str) -> object:
    """One comparable form of a column value from either side."""
    if value is None:
        return None
    if base_type == "jsonb":
        return json.loads(value) if isinstance(value, str) else value
    if base_type == "timestamptz" and isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if base_type == "numeric":  # Decimals compare by value: 1.500 == 1.5
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if base_type == "boolean":
        return bool(value)
    return value


def _canon_row(spec: TableSpec, row: Iterable[object]) -> Row:
    return tuple(_canon(v, c.base_type) for c, v in zip(spec.columns, row, strict=True))


def _keyed(spec: TableSpec, rows: Iterable[Iterable[object]]) -> dict[tuple[object, ...], Row]:
    pk = [spec.index[k] for k in spec.primary_key]
    out: dict[tuple[object, ...], Row] = {}
    for raw in rows:
        row = _canon_row(spec, raw)
        out[tuple(row[i] for i in pk)] = row
    return out


def source_rows(conn: psycopg.Connection[Any], spec: TableSpec) -> dict[tuple[object, ...], Row]:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(spec.name)))
    return _keyed(spec, rows.fetchall())


def projected_rows(client: Client, region: str, spec: TableSpec) -> dict[tuple[object, ...], Row]:
    cols = ", ".join(f"`{c}`" for c in spec.column_names)
    result = client.query(
        f"SELECT {cols} FROM cur_{spec.name} WHERE region = {{region:String}}",
        parameters={"region": region},
    )
    return _keyed(spec, result.result_rows)


def diff_region(
    client: Client,
    conn: psycopg.Connection[Any],
    region: str,
    tables: Iterable[str] | None = None,
) -> list[TableDiff]:
    """Compare every (or the given) replicated table of one region with its source, as of
    one REPEATABLE READ snapshot of the WMS."""
    diffs = []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for name in tables or WMS_MODEL:
            spec = WMS_MODEL[name]
            src, proj = source_rows(conn, spec), projected_rows(client, region, spec)
            d = TableDiff(region, name, len(src), len(proj))
            d.missing = sorted((k for k in src if k not in proj), key=repr)
            d.unexpected = sorted((k for k in proj if k not in src), key=repr)
            d.different = [(k, src[k], proj[k]) for k in src if k in proj and src[k] != proj[k]]
            diffs.append(d)
    return diffs
