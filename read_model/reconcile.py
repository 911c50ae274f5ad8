"""Reconciliation: prove the projection equals each regional WMS, down to the rows.

A region is compared at one consistent point. The WMS side is one REPEATABLE READ READ
ONLY snapshot; `pg_current_wal_insert_lsn()` read inside it gives L, above the commit LSN of
every transaction the snapshot sees. The projection side is evaluated *as of L* (the
latest version of each key with `_commit_lsn <= L`, the same rule as the serving views)
once its watermark passed L; an idle region never gets there through commits, so when
the watermark stays put while newer heartbeats arrive, the cut is the watermark (Debezium
had nothing more to send; it never confirms LSNs on an idle database, so the slot can't
tell). So changes in flight raise no alarm.

Checks: every replicated table row for row (keyset chunks merge-joined by id, a row
checksum per table), and the stock figures per (owner, warehouse, SKU) of the oracle's
SQL against what the API serves (`stock_current`, a version at every commit) at the
same cut. A difference is reported only when a
second pass at a later point finds it again (a commit racing the snapshot, microseconds
wide, is not a finding). Values are compared in one canonical form (UTC datetimes,
Decimals, parsed JSON), so a difference is a real difference.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import structlog
from clickhouse_connect.driver.client import Client
from prometheus_client import Gauge
from psycopg import sql

from read_model import queries
from schemas.wms_model import WMS_MODEL, TableSpec
from simulator.oracle import STOCK_FIELDS, STOCK_SQL
from stockcdc.settings import Region, Settings

log = structlog.get_logger(__name__)

Row = tuple[object, ...]
Key = tuple[object, ...]

#: Differences kept per kind in a report (counts are always complete).
SAMPLE_LIMIT = 50

DIFFERENCES = Gauge(
    "stockcdc_reconcile_differences",
    "Confirmed differences between the projection and the WMS at the last reconciliation",
    ["region", "check"],
)
LAST_RUN = Gauge(
    "stockcdc_reconcile_last_run_timestamp_seconds", "End of the last reconciliation", ["region"]
)
COMPARABLE = Gauge(
    "stockcdc_reconcile_comparable",
    "1 when the last reconciliation reached a consistent point in time, else 0",
    ["region"],
)


class NotComparable(Exception):
    """The projection did not reach the WMS snapshot's point in time: nothing to compare."""


# -- canonical values --------------------------------------------------------------------


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


def _row_hash(row: Row) -> int:
    """A stable 64-bit hash of a canonical row (Decimals normalised, JSON keys sorted)."""
    text = json.dumps(
        [v.normalize() if isinstance(v, Decimal) else v for v in row],
        sort_keys=True,
        default=str,
    )
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


# -- reports -----------------------------------------------------------------------------


@dataclass
class TableDiff:
    """Differences of one table of one region, by primary key, with a checksum per side
    (sum of row hashes mod 2^64: order-free, equal iff the row sets are, barring a
    collision)."""

    region: str
    table: str
    source_rows: int = 0
    projected_rows: int = 0
    source_checksum: int = 0
    projected_checksum: int = 0
    missing: list[Key] = field(default_factory=list)  # in WMS, not projected
    unexpected: list[Key] = field(default_factory=list)  # projected only
    different: list[tuple[Key, Row, Row]] = field(default_factory=list)
    missing_count: int = 0
    unexpected_count: int = 0
    different_count: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing_count or self.unexpected_count or self.different_count)

    @property
    def count(self) -> int:
        return self.missing_count + self.unexpected_count + self.different_count

    def keys(self) -> set[Key]:
        return {*self.missing, *self.unexpected, *(k for k, _s, _p in self.different)}

    def summary(self, limit: int = 5) -> str:
        return (
            f"{self.region}.{self.table}: {self.source_rows} source / {self.projected_rows} "
            f"projected; missing {self.missing[:limit]}, unexpected {self.unexpected[:limit]}, "
            f"different {self.different[:limit]}"
        )

    def _add(self, kind: str, item: Any) -> None:
        setattr(self, f"{kind}_count", getattr(self, f"{kind}_count") + 1)
        samples: list[Any] = getattr(self, kind)
        if len(samples) < SAMPLE_LIMIT:
            samples.append(item)


@dataclass
class FigureDiff:
    """One (owner, warehouse, SKU) whose figures differ: WMS vs projection."""

    key: tuple[str, str, str]
    wms: dict[str, Any] | None
    projection: dict[str, Any] | None


@dataclass
class RegionReport:
    region: str
    comparable: bool
    detail: str = ""
    cut_lsn: int = 0
    wms_snapshot: str = ""
    seconds: float = 0.0
    stock_keys: int = 0
    tables: list[TableDiff] = field(default_factory=list)
    figures: list[FigureDiff] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return sum(t.count for t in self.tables) + len(self.figures)


@dataclass
class Report:
    started_at: str
    finished_at: str
    regions: list[RegionReport]

    @property
    def ok(self) -> bool:
        return all(r.comparable and r.differences == 0 for r in self.regions)

    @property
    def differences(self) -> int:
        return sum(r.differences for r in self.regions)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = asdict(self)
        body["ok"], body["differences"] = self.ok, self.differences
        for region, rep in zip(body["regions"], self.regions, strict=True):
            region["differences"] = rep.differences
        plain: dict[str, Any] = json.loads(json.dumps(body, default=str))
        return plain


# -- the table check ---------------------------------------------------------------------


def _source_chunk(
    conn: psycopg.Connection[Any], spec: TableSpec, after: int, limit: int
) -> list[Row]:
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names)
    query = sql.SQL("SELECT {} FROM {} WHERE id > %s ORDER BY id LIMIT %s").format(
        cols, sql.Identifier(spec.name)
    )
    return [_canon_row(spec, r) for r in conn.execute(query, (after, limit)).fetchall()]


def _projected_chunk(
    client: Client, region: str, spec: TableSpec, cut: int, after: int, upto: int | None
) -> list[Row]:
    """Rows of (after, upto] as of `cut`: per id the latest version at or below it,
    deleted ids left out (the `cur_*` rule, at an explicit cut)."""
    cols = [c for c in spec.column_names if c != "id"]
    packed = ", ".join([*(f"`{c}`" for c in cols), "_is_deleted"])
    unpacked = ", ".join("id" if c == "id" else f"v.{cols.index(c) + 1}" for c in spec.column_names)
    bound = "" if upto is None else " AND id <= {upto:Int64}"
    query = (
        f"SELECT {unpacked} FROM (SELECT id, argMax(tuple({packed}), (_commit_lsn, _lsn)) AS v"
        f" FROM wms_{spec.name} WHERE region = {{region:String}} AND id > {{after:Int64}}"
        f"{bound} AND _commit_lsn <= {{cut:UInt64}} GROUP BY id)"
        f" WHERE v.{len(cols) + 1} = 0 ORDER BY id"
    )
    params = {"region": region, "after": after, "cut": cut, "upto": upto or 0}
    return [_canon_row(spec, r) for r in client.query(query, parameters=params).result_rows]


def diff_table(
    client: Client,
    conn: psycopg.Connection[Any],
    region: str,
    spec: TableSpec,
    cut: int,
    chunk: int = 20_000,
) -> TableDiff:
    """Merge-join one table in id order, `chunk` WMS rows at a time (bounded memory, and
    short ClickHouse queries that never hold the embedded engine for long)."""
    d = TableDiff(region, spec.name)
    mask = (1 << 64) - 1
    after = 0
    while True:
        src = _source_chunk(conn, spec, after, chunk)
        last = len(src) < chunk
        upto = None if last else int(src[-1][spec.index["id"]])  # type: ignore[call-overload]
        proj = _projected_chunk(client, region, spec, cut, after, upto)
        d.source_rows += len(src)
        d.projected_rows += len(proj)
        by_id = {r[spec.index["id"]]: r for r in proj}
        for row in src:
            d.source_checksum = (d.source_checksum + _row_hash(row)) & mask
            key = (row[spec.index["id"]],)
            other = by_id.pop(key[0], None)
            if other is None:
                d._add("missing", key)
            elif other != row:
                d._add("different", (key, row, other))
        for key_id in by_id:
            d._add("unexpected", (key_id,))
        for row in proj:
            d.projected_checksum = (d.projected_checksum + _row_hash(row)) & mask
        if last:
            return d
        after = int(upto)  # type: ignore[arg-type]


# -- the figure check --------------------------------------------------------------------


def _wms_figures(conn: psycopg.Connection[Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every figure per (owner, warehouse, SKU) by the oracle's own SQL: the one
    definition of each figure over WMS tables."""
    return {
        (str(r[0]), str(r[1]), str(r[2])): dict(zip(STOCK_FIELDS, r[3:], strict=True))
        for r in conn.execute(STOCK_SQL).fetchall()
    }


def projected_figures(
    client: Client, owners: Iterable[str], cut: Mapping[str, int] | None = None
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The figures the API serves (`stock_current`, written by the projector), every key
    of `owners`, as of `cut` (default: the watermarks now)."""
    out = {}
    for owner in sorted(owners):
        after: tuple[str, str] | None = None
        while True:
            page = queries.stock_page(client, owner, limit=1000, after=after, cut=cut)
            for row in page:
                out[(row.owner, row.warehouse, row.sku)] = {
                    f: getattr(row, f) for f in STOCK_FIELDS
                }
            if len(page) < 1000:
                break
            after = (page[-1].warehouse, page[-1].sku)
    return out


def _owner_codes(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT code FROM owner").fetchall()]


# -- one region, at one consistent point --------------------------------------------------

Clock = Callable[[], float]


def projection_point(client: Client, region: str) -> tuple[int, float | None]:
    """(watermark LSN, latest applied heartbeat as epoch seconds) of a region."""
    rows = client.query(
        "SELECT max(applied_commit_lsn), toFloat64(max(heartbeat_ts)) FROM _watermark_max"
        " WHERE region = {r:String}",
        parameters={"r": region},
    ).result_rows
    if not rows or rows[0][0] is None:
        return 0, None
    lsn, beat = rows[0]
    return int(lsn), (float(beat) if beat else None)


def await_point(
    client: Client,
    region: str,
    lsn: int,
    timeout_s: float,
    idle_s: float = 2.0,
    clock: Clock = time.time,
) -> int:
    """The cut at which the projection holds exactly the commits of `region` below
    `lsn`, once it does: `lsn` when the watermark passes it; the watermark itself when
    the region is idle (the watermark has not moved while heartbeats emitted `idle_s`
    after the snapshot were applied: Debezium streams, and had no commit to send).
    Raises `NotComparable` after `timeout_s` (a stale or stopped region)."""
    deadline = time.monotonic() + timeout_s
    last, moved_at = -1, clock()
    while True:
        applied, beat = projection_point(client, region)
        if applied >= lsn:
            return lsn
        if applied != last:
            last, moved_at = applied, clock()
        elif beat is not None and beat > moved_at + idle_s:
            return applied
        if time.monotonic() > deadline:
            raise NotComparable(
                f"the projection of {region} did not reach WMS LSN {lsn} within "
                f"{timeout_s:.0f}s (watermark {applied}); it is stale or stopped"
            )
        time.sleep(0.2)


def _one_pass(settings: Settings, client: Client, region: Region, timeout_s: float) -> RegionReport:
    started = time.monotonic()
    with psycopg.connect(settings.pg_dsn(region, "cdc"), autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The snapshot is taken by this statement; the insert LSN read in it is above
        # every commit record the snapshot sees (the write LSN is not: with
        # synchronous_commit off a commit is visible before its record is written).
        row = conn.execute(
            "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn, pg_current_snapshot()::text"
        ).fetchone()
        assert row is not None
        point, snapshot = int(row[0]), str(row[1])
        report = RegionReport(region.name, True, wms_snapshot=snapshot)
        try:
            cut = report.cut_lsn = await_point(client, region.name, point, timeout_s)
        except NotComparable as exc:
            report.comparable, report.detail = False, str(exc)
            return report
        for spec in WMS_MODEL.values():
            report.tables.append(diff_table(client, conn, region.name, spec, cut))
        want = _wms_figures(conn)
        got = projected_figures(client, _owner_codes(conn), {region.name: cut})
        report.stock_keys = len(want)
        report.figures = [
            FigureDiff(k, want.get(k), got.get(k))
            for k in sorted(want.keys() | got.keys())
            if want.get(k) != got.get(k)
        ]
        conn.execute("ROLLBACK")
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _confirmed(first: RegionReport, second: RegionReport) -> RegionReport:
    """Keep in `second` only what `first` found too (same table and key, same figure key)."""
    for t2 in second.tables:
        t1 = next(t for t in first.tables if t.table == t2.table)
        seen = t1.keys()
        t2.missing = [k for k in t2.missing if k in seen]
        t2.unexpected = [k for k in t2.unexpected if k in seen]
        t2.different = [d for d in t2.different if d[0] in seen]
        t2.missing_count, t2.unexpected_count = len(t2.missing), len(t2.unexpected)
        t2.different_count = len(t2.different)
    keys = {f.key for f in first.figures}
    second.figures = [f for f in second.figures if f.key in keys]
    return second


def reconcile_region(
    settings: Settings, client: Client, region: Region, timeout_s: float | None = None
) -> RegionReport:
    """Compare one region at a consistent point; differences are confirmed by a second
    pass (only when the first found any)."""
    wait = settings.reconcile_timeout_s if timeout_s is None else timeout_s
    first = _one_pass(settings, client, region, wait)
    if not first.comparable or first.differences == 0:
        return first
    log.warning("reconcile.recheck", region=region.name, differences=first.differences)
    second = _one_pass(settings, client, region, wait)
    if not second.comparable:
        return second
    # More than SAMPLE_LIMIT keys per kind can't be confirmed key by key: keep counts.
    if any(t.count > SAMPLE_LIMIT for t in first.tables):
        return second
    return _confirmed(first, second)


def reconcile(
    settings: Settings,
    client: Client,
    regions: Sequence[Region] | None = None,
    timeout_s: float | None = None,
) -> Report:
    """Reconcile every region (or `regions`); record metrics and the report file."""
    started = datetime.now(UTC)
    reports = []
    for region in regions or settings.region_list():
        rep = reconcile_region(settings, client, region, timeout_s)
        reports.append(rep)
        COMPARABLE.labels(region.name).set(1 if rep.comparable else 0)
        for t in rep.tables:
            DIFFERENCES.labels(region.name, t.table).set(t.count)
        DIFFERENCES.labels(region.name, "stock_figures").set(len(rep.figures))
        LAST_RUN.labels(region.name).set(time.time())
        log.info(
            "reconcile.region",
            region=region.name,
            comparable=rep.comparable,
            differences=rep.differences,
            seconds=rep.seconds,
            detail=rep.detail or None,
        )
    report = Report(started.isoformat(), datetime.now(UTC).isoformat(), reports)
    write_report(settings, report)
    return report


# -- report files ------------------------------------------------------------------------


def report_dir(settings: Settings) -> Path:
    return settings.state_dir / "reconcile"


def write_report(settings: Settings, report: Report) -> Path:
    """`last.json` (what the API serves) plus a timestamped copy kept for the record."""
    out = report_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    body = json.dumps(report.to_json(), indent=1).encode()
    stamp = report.finished_at.replace(":", "").replace("-", "")[:15]
    (out / f"report-{stamp}.json").write_bytes(body)
    tmp = out / "last.json.tmp"
    tmp.write_bytes(body)
    tmp.replace(out / "last.json")
    return out / "last.json"


def last_report(settings: Settings) -> dict[str, Any] | None:
    """The latest report written by any process, or None when none ran yet."""
    path = report_dir(settings) / "last.json"
    try:
        parsed: dict[str, Any] = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    return parsed


# -- compatibility for the projection tests ---------------------------------------------


def diff_region(
    client: Client,
    conn: psycopg.Connection[Any],
    region: str,
    tables: Iterable[str] | None = None,
) -> list[TableDiff]:
    """Compare every (or the given) replicated table of one region with its source, as of
    one REPEATABLE READ snapshot of the WMS and the projection's current watermark (for
    a caught-up, idle region: the tests' check)."""
    cut, _beat = projection_point(client, region)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return [diff_table(client, conn, region, WMS_MODEL[n], cut) for n in tables or WMS_MODEL]


def iter_differences(report: Report) -> Iterator[str]:
    """One line per finding, for the CLI."""
    for r in report.regions:
        if not r.comparable:
            yield f"{r.region}: not compared: {r.detail}"
        for t in r.tables:
            if not t.ok:
                yield t.summary()
        for f in r.figures[:SAMPLE_LIMIT]:
            yield f"{r.region} stock {f.key}: wms {f.wms} / projection {f.projection}"
