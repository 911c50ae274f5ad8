"""The WMS tables as the projection sees them: column specs parsed from `wms/schema.sql`
and one lookup table from a PostgreSQL type to (Debezium JSON decoder, ClickHouse type).

The schema file is regular (one column per line, table constraints on their own lines),
so parsing it keeps the model and the source DDL from drifting apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas import WMS_SCHEMA_SQL

#: A decoder turns one Debezium JSON value (never None) into its Python value, or raises
#: ValueError/TypeError for a value of the wrong shape.
Decoder = Callable[[Any], object]

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _int(v: Any) -> int:
    # bool is an int subclass: a JSON true in an integer column is a shape error.
    if type(v) is not int:
        raise TypeError(f"expected an integer, got {v!r}")
    return v


def _text(v: Any) -> str:
    if type(v) is not str:
        raise TypeError(f"expected a string, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise TypeError(f"expected a boolean, got {v!r}")
    return v


def _numeric(v: Any) -> Decimal:
    # decimal.handling.mode=string: exact decimal text, e.g. "12.3400".
    if type(v) is not str:
        raise TypeError(f"expected a decimal string, got {v!r}")
    try:
        d = Decimal(v)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {v!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not a finite decimal: {v!r}")
    return d


def _date(v: Any) -> date:
    # time.precision.mode=adaptive: DATE is days since 1970-01-01.
    return date.fromordinal(_EPOCH_ORDINAL + _int(v))


def _timestamptz(v: Any) -> datetime:
    # Debezium ZonedTimestamp: ISO-8601 in UTC with a 'Z', microseconds kept.
    ts = datetime.fromisoformat(_text(v))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {v!r}")
    return ts.astimezone(UTC)


def _jsonb(v: Any) -> str:
    # Debezium sends jsonb as PostgreSQL's canonical text; keep it byte for byte.
    return _text(v)


@dataclass(frozen=True, slots=True)
class PgType:
    """How one PostgreSQL base type is decoded and stored. `ch_type` may contain `{p}`
    and `{s}` for numeric precision and scale."""

    decoder: Decoder
    ch_type: str


#: PostgreSQL base type -> (decoder of the Debezium JSON value, ClickHouse type).
PG_TYPES: Mapping[str, PgType] = {
    "bigint": PgType(_int, "Int64"),
    "integer": PgType(_int, "Int32"),
    "text": PgType(_text, "String"),
    "char": PgType(_text, "String"),
    "boolean": PgType(_bool, "Bool"),
    "numeric": PgType(_numeric, "Decimal({p}, {s})"),
    "date": PgType(_date, "Date32"),
    "timestamptz": PgType(_timestamptz, "DateTime64(6, 'UTC')"),
    "jsonb": PgType(_jsonb, "String"),
}


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One source column: name, PostgreSQL type as written, nullability, key membership,
    and whether the DDL gives it a default (DEFAULT or an identity)."""

    name: str
    pg_type: str  # e.g. "numeric(10, 3)", "char(2)", "timestamptz"
    nullable: bool
    primary_key: bool
    has_default: bool = False

    @property
    def base_type(self) -> str:
        return self.pg_type.split("(", 1)[0]

    @property
    def decoder(self) -> Decoder:
        return PG_TYPES[self.base_type].decoder

    @property
    def ch_type(self) -> str:
        """Exact ClickHouse type, Nullable(...) when the source column is nullable."""
        template = PG_TYPES[self.base_type].ch_type
        args = re.findall(r"\d+", self.pg_type)
        inner = template.format(p=args[0], s=args[1]) if "{p}" in template else template
        return f"Nullable({inner})" if self.nullable else inner


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One WMS table: its columns in source order and its primary key."""

    name: str
    columns: tuple[ColumnSpec, ...]
    index: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {c.name: i for i, c in enumerate(self.columns)})

    @property
    def primary_key(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.primary_key)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnSpec:
        return self.columns[self.index[name]]


_CREATE = re.compile(r"CREATE TABLE (\w+) \((.*?)\n\);", re.S)
_COLUMN = re.compile(
    r"^\s*(?P<name>[a-z_][a-z0-9_]*)\s+"
    r"(?P<type>bigint|integer|text|boolean|jsonb|date|timestamptz|char\(\d+\)"
    r"|numeric\(\d+,\s*\d+\))(?P<rest>.*)$"
)
_DEFAULT = re.compile(r"\b(DEFAULT|GENERATED)\b")
_CONSTRAINT = re.compile(r"^\s*(UNIQUE|CHECK|PRIMARY KEY|CONSTRAINT|FOREIGN KEY|EXCLUDE)\b")


def parse_schema(ddl: str) -> dict[str, TableSpec]:
    """Table specs from the WMS DDL; raises ValueError on a column line it can't read, so a
    schema change that needs a new type mapping fails here, not silently later."""
    tables: dict[str, TableSpec] = {}
    for m in _CREATE.finditer(ddl):
        cols: list[ColumnSpec] = []
        for raw in m.group(2).splitlines():
            line = raw.split("--", 1)[0].rstrip().rstrip(",")
            if not line.strip() or _CONSTRAINT.match(line) or line.lstrip().startswith("'"):
                continue  # blank, a table constraint, or a continued CHECK list
            cm = _COLUMN.match(line)
            if cm is None:
                raise ValueError(f"{m.group(1)}: unparsed column line {raw!r}")
            rest = cm.group("rest").upper()
            pk = "PRIMARY KEY" in rest
            cols.append(
                ColumnSpec(
                    name=cm.group("name"),
                    pg_type=re.sub(r",\s*", ", ", cm.group("type")),
                    nullable=not (pk or "NOT NULL" in rest),
                    primary_key=pk,
                    has_default=_DEFAULT.search(rest) is not None,
                )
            )
        tables[m.group(1)] = TableSpec(m.group(1), tuple(cols))
    return tables


#: Every WMS table the projection knows, by source table name, in schema order.
WMS_MODEL: Mapping[str, TableSpec] = parse_schema(WMS_SCHEMA_SQL)

#: Tables whose updates and deletes must carry the whole old row (`RowChange.before`):
#: the stock figures are per-key sums over them, kept incrementally by taking a row's
#: old values out of its key's sums. Debezium sends the old row only for a table with
#: REPLICA IDENTITY FULL (under DEFAULT, `before` is null for an update and the key alone
#: for a delete), so infra sets FULL on exactly these, and a deployed WMS must too.
FULL_BEFORE_TABLES: tuple[str, ...] = ("inventory", "inbound_line")
if not set(FULL_BEFORE_TABLES) <= WMS_MODEL.keys():
    raise ValueError(f"FULL_BEFORE_TABLES not in the WMS schema: {FULL_BEFORE_TABLES}")


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds (Debezium `ts_ms`) as an aware UTC datetime."""
    return _UTC_EPOCH + timedelta(milliseconds=ms)
