"""Renders the generated ClickHouse DDL files from the WMS model, and the templates of
every DDL file for local (chDB, single server) or cluster deployment.

`schemas/clickhouse/*.sql` are the declarative source of truth that `migrate` applies;
the ones derived from the WMS model are written by `python -m read_model.ddl` and a test
checks they are up to date. Templates use `${ON_CLUSTER}` and `${REPLICATED}` only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from string import Template

from schemas.wms_model import WMS_MODEL, TableSpec

DDL_DIR = Path(str(files("schemas").joinpath("clickhouse")))

#: Columns every replicated table adds after the source columns.
META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("_lsn", "UInt64"),  # change LSN (source.lsn)
    ("_commit_lsn", "UInt64"),  # commit LSN of its transaction (snapshot LSN for reads)
    ("_is_deleted", "UInt8"),
    ("_extra", "Map(String, String)"),  # columns unknown to the model, as JSON text
    ("_ingested_at", "DateTime64(6, 'UTC') DEFAULT now64(6)"),
)


@dataclass(frozen=True, slots=True)
class KeyedCopy:
    """A copy of a replicated table sorted for the read path (fed by a materialized
    view). Its key columns must never change for a source row, or versions of one row
    would split across two keys."""

    name: str
    source: str
    key: tuple[str, ...]


#: Read-path copies: reads go by owner/SKU while the source tables are keyed by id.
KEYED_COPIES: tuple[KeyedCopy, ...] = (
    KeyedCopy("inventory_by_sku", "inventory", ("owner_id", "sku_id", "id")),
    KeyedCopy("inventory_txn_by_sku", "inventory_txn", ("owner_id", "sku_id", "id")),
    KeyedCopy("serial_number_by_sku", "serial_number", ("sku_id", "serial_no", "id")),
    KeyedCopy("inbound_line_by_sku", "inbound_line", ("sku_id", "id")),
    KeyedCopy("sku_by_code", "sku", ("owner_id", "sku_code", "id")),
    KeyedCopy("lot_by_sku", "lot", ("sku_id", "id")),
)


def table_name(source_table: str) -> str:
    """ClickHouse table of a WMS table."""
    return f"wms_{source_table}"


def _columns(spec: TableSpec) -> list[tuple[str, str]]:
    return [("region", "LowCardinality(String)")] + [(c.name, c.ch_type) for c in spec.columns]


def render_wms_tables(model: Mapping[str, TableSpec] = WMS_MODEL) -> str:
    """002: one ReplacingMergeTree per WMS table.

    Sorting key (region, pk, _commit_lsn), version _lsn: a merge only collapses copies of
    one row within one transaction (replays, or several changes of the row in one
    transaction). Versions of different transactions are never merged away, so a merge
    can't drop the version a reader is entitled to see in favour of one above the
    watermark (invisible until the watermark passes it).
    """
    out = [_HEADER.format(what="one table per WMS table")]
    for spec in model.values():
        cols = ",\n".join(f"    `{n}` {t}" for n, t in _columns(spec) + list(META_COLUMNS))
        key = ", ".join(["region", *spec.primary_key, "_commit_lsn"])
        out.append(
            f"CREATE TABLE IF NOT EXISTS {table_name(spec.name)} ${{ON_CLUSTER}}\n(\n{cols}\n)\n"
            f"ENGINE = ${{REPLICATED}}ReplacingMergeTree(_lsn)\nORDER BY ({key});\n"
        )
    for copy in KEYED_COPIES:
        src = table_name(copy.source)
        key = ", ".join(["region", *copy.key, "_commit_lsn"])
        out.append(
            f"CREATE TABLE IF NOT EXISTS wms_{copy.name} ${{ON_CLUSTER}} AS {src}\n"
            f"ENGINE = ${{REPLICATED}}ReplacingMergeTree(_lsn)\nORDER BY ({key});\n\n"
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS wms_{copy.name}_mv ${{ON_CLUSTER}}\n"
            f"TO wms_{copy.name} AS SELECT * FROM {src};\n"
        )
    return "\n".join(out)


def _current_view(view: str, table: str, spec: TableSpec, group: tuple[str, ...]) -> str:
    rest = [n for n in (*spec.column_names, "_extra", "_lsn", "_commit_lsn") if n not in group]
    packed = ", ".join(f"`{n}`" for n in (*rest, "_is_deleted"))
    unpacked = ",\n    ".join(f"v.{i} AS `{n}`" for i, n in enumerate(rest, start=1))
    keys = ", ".join(("region", *group))
    return (
        f"CREATE VIEW IF NOT EXISTS {view} ${{ON_CLUSTER}} AS\n"
        f"SELECT {keys},\n    {unpacked}\n"
        f"FROM\n(\n"
        f"    SELECT {keys}, argMax(tuple({packed}), (_commit_lsn, _lsn)) AS v\n"
        f"    FROM {table}\n"
        f"    WHERE _commit_lsn <= {_WATERMARK_OF_REGION}\n"
        f"    GROUP BY {keys}\n"
        f")\nWHERE v.{len(rest) + 1} = 0;\n"
    )


# The applied commit LSN of each row's region (0 when the region has none): a scalar
# subquery, evaluated once per query.
_WATERMARK_OF_REGION = (
    "(SELECT CAST((groupArray(region), groupArray(lsn)), 'Map(String, UInt64)')"
    " FROM _watermark_lsn)[region]"
)


def render_current_views(model: Mapping[str, TableSpec] = WMS_MODEL) -> str:
    """003: `cur_<table>`: per key, the latest version by (_commit_lsn, _lsn) among those
    at or below the region's watermark, deleted keys dropped (decision 2 and 4)."""
    out = [_HEADER.format(what="current visible state of every replicated table")]
    for spec in model.values():
        out.append(_current_view(f"cur_{spec.name}", table_name(spec.name), spec, spec.primary_key))
    for copy in KEYED_COPIES:
        out.append(
            _current_view(f"cur_{copy.name}", f"wms_{copy.name}", model[copy.source], copy.key)
        )
    return "\n".join(out)


_HEADER = "-- GENERATED by `python -m read_model.ddl` from the WMS model: {what}.\n"

GENERATED: Mapping[str, Callable[[], str]] = {
    "002_wms_tables.sql": render_wms_tables,
    "003_current_views.sql": render_current_views,
}


def render(template: str, cluster: str | None) -> str:
    """A DDL file for a single server/chDB (cluster None) or ON CLUSTER with Replicated
    engines (default replica path and name from the servers' config)."""
    return Template(template).substitute(
        ON_CLUSTER=f"ON CLUSTER `{cluster}`" if cluster else "",
        REPLICATED="Replicated" if cluster else "",
    )


def write_generated(directory: Path = DDL_DIR) -> list[Path]:
    """Rewrite the generated DDL files; returns their paths."""
    written = []
    for name, fn in GENERATED.items():
        path = directory / name
        path.write_text(fn())
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_generated():
        sys.stdout.write(f"wrote {p}\n")
