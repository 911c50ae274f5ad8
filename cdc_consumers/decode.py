"""Decode one Kafka record of a region's CDC topic into a typed `Event`.

The topic carries, in commit order, Debezium data events of the WMS tables, transaction
BEGIN/END records, Debezium's heartbeats and the heartbeat action's WAL marks
(infra/connect.py routes them all there). Anything that
can't be decoded exactly, including a table the projection doesn't know, raises
`DecodeError`: the consumer dead-letters it with the reason and the original bytes.

The common record, a create, update or snapshot read of a known table with every value
as expected, takes a fast path first: msgspec parses it straight into a per-table typed
struct (types checked in C, no dict per record), and generated code finishes the row.
Anything that path does not take whole is decoded again by the checked path, which says
exactly what is wrong; the two give the same event for every record the fast one takes.

Updates and deletes of `FULL_BEFORE_TABLES` also carry the old row (`RowChange.before`),
decoded by the same per-table plan as `after`; other tables never look at `before`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import orjson

from cdc_consumers.errors import DecodeError
from schemas.events import (
    NO_EXTRA,
    UNAVAILABLE,
    WAL_MARK_PREFIX,
    Event,
    Heartbeat,
    Op,
    RowChange,
    Snapshot,
    Tombstone,
    Truncate,
    TxBegin,
    TxEnd,
    WalMark,
)
from schemas.wms_model import FULL_BEFORE_TABLES, WMS_MODEL, Decoder, TableSpec

#: A table's fast row: the typed struct of `after` to the row tuple (None: not taken).
_FastRow = Callable[[Any], tuple[object, ...] | None]

__all__ = ["DecodeError", "decode"]

#: Key field the ByLogicalTableRouter adds: the topic the record would have had.
ROUTER_FIELD = "__dbz__physicalTableIdentifier"
_SOURCE_SCHEMA = "public"
_TOASTABLE = frozenset({"text", "jsonb", "numeric", "char"})
_OPS: Mapping[str, Op] = {o.value: o for o in Op}
_SNAPSHOTS: Mapping[str, Snapshot] = {s.value: s for s in Snapshot}


#: Ops the fast path takes (deletes and truncates always take the checked path).
_FAST_OPS: Mapping[str, Op] = {"c": Op.CREATE, "u": Op.UPDATE, "r": Op.READ}
_NO_COLUMNS: frozenset[str] = frozenset()
_new_tuple = tuple.__new__
_NULL = msgspec.Raw(b"null")

#: What Debezium writes, as decoded, into a NOT NULL column that a key-only old tuple
#: (REPLICA IDENTITY DEFAULT) lacks and whose DDL has no default: its type's zero (a
#: nullable column stays null). Types whose filler is not certain are left out.
_KEY_ONLY_FILLERS: Mapping[str, object] = {
    "bigint": 0,
    "integer": 0,
    "text": "",
    "char": "",
    "boolean": False,
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-table decoding plan, precomputed once: (name, decoder, nullable, toastable),
    the key's positions in the row, the fast path's `after` decoder and row, and for a
    table of `FULL_BEFORE_TABLES` how to tell its full old row from a key-only one."""

    spec: TableSpec
    columns: tuple[tuple[str, Decoder, bool, bool], ...]
    pk: tuple[tuple[str, Decoder], ...]
    pk_index: tuple[int, ...]
    names: frozenset[str]
    fast_after: msgspec.json.Decoder[Any]
    fast_row: _FastRow
    full_before: bool  # decode `before` of its updates and deletes
    # (position, filler) of the columns a key-only image fills in (see `_full_image`).
    key_only_fill: tuple[tuple[int, object], ...]


class _FastSource(msgspec.Struct):
    """The `source` fields the fast path reads (others are skipped unparsed)."""

    name: str
    schema: str
    table: str
    lsn: int
    txId: int | None  # Debezium's name
    ts_ms: int
    snapshot: str | None = None


class _FastEnvelope(msgspec.Struct):
    """A data event's envelope; `after` and `before` stay raw until the table is known
    (`before` is only read for a table of `FULL_BEFORE_TABLES`)."""

    op: str
    source: _FastSource
    after: msgspec.Raw
    before: msgspec.Raw = _NULL


_FAST_ENVELOPE = msgspec.json.Decoder(_FastEnvelope)

#: Per base type, for the fast path: the type msgspec checks while parsing, then the
#: statements turning the value into its Python value (`{v}` is the variable; `return
#: None` hands the record to the checked path). Conversions are the checked path's own.
_FAST: Mapping[str, tuple[type, tuple[str, ...]]] = {
    "bigint": (int, ()),
    "integer": (int, ()),
    "boolean": (bool, ()),
    "text": (str, ("if {v} == _UNAVAILABLE: return None",)),
    "char": (str, ("if {v} == _UNAVAILABLE: return None",)),
    "jsonb": (str, ("if {v} == _UNAVAILABLE: return None",)),
    "numeric": (
        str,
        (
            "if {v} == _UNAVAILABLE: return None",
            "{v} = _Decimal({v})",
            "if not {v}.is_finite(): return None",
        ),
    ),
    "date": (int, ("{v} = _fromordinal(_EPOCH + {v})",)),
    # Debezium writes UTC ('...Z'), parsed to the UTC singleton: other zones are
    # converted, a value without one is refused.
    "timestamptz": (
        str,
        (
            "{v} = _fromisoformat({v})",
            "if {v}.tzinfo is not _UTC:",
            "    if {v}.tzinfo is None: return None",
            "    {v} = {v}.astimezone(_UTC)",
        ),
    ),
}


def _fast_table(spec: TableSpec) -> tuple[msgspec.json.Decoder[Any], _FastRow]:
    """`spec`'s fast path: a decoder of `after` into a struct of every known column
    (all present, no others, each of its JSON type), and generated straight-line code
    from that struct to the row tuple, which returns None (or raises ValueError & co.)
    for a value the checked path would treat otherwise (placeholder, non-finite...)."""
    fields = []
    for c in spec.columns:
        json_type = _FAST[c.base_type][0]
        fields.append((c.name, json_type | None if c.nullable else json_type))
    struct = msgspec.defstruct(f"_Fast_{spec.name}", fields, forbid_unknown_fields=True)
    lines = ["def fast_row(o):"]
    for i, c in enumerate(spec.columns):
        v = f"v{i}"
        lines.append(f"    {v} = o.{c.name}")
        convert = _FAST[c.base_type][1]
        if not convert:
            continue
        indent = "    "
        if c.nullable:
            lines.append(f"    if {v} is not None:")
            indent = "        "
        lines += [indent + statement.format(v=v) for statement in convert]
    lines.append(f"    return ({', '.join(f'v{i}' for i in range(len(spec.columns)))},)")
    namespace: dict[str, Any] = {
        "_UNAVAILABLE": UNAVAILABLE,
        "_Decimal": Decimal,
        "_fromisoformat": datetime.fromisoformat,
        "_fromordinal": date.fromordinal,
        "_EPOCH": date(1970, 1, 1).toordinal(),
        "_UTC": UTC,
    }
    exec(compile("\n".join(lines), f"<fast_row {spec.name}>", "exec"), namespace)  # noqa: S102
    return msgspec.json.Decoder(struct), namespace["fast_row"]


def _key_only_fill(spec: TableSpec) -> tuple[tuple[int, object], ...]:
    """The columns Debezium fills in for a key-only old tuple, with their filler: non-key
    columns without a DDL default, nullable (null) or of a type in `_KEY_ONLY_FILLERS`."""
    fill: list[tuple[int, object]] = []
    for i, c in enumerate(spec.columns):
        if c.primary_key or c.has_default:
            continue
        if c.nullable:
            fill.append((i, None))
        elif c.base_type in _KEY_ONLY_FILLERS:
            fill.append((i, _KEY_ONLY_FILLERS[c.base_type]))
    return tuple(fill)


def _plan_of(spec: TableSpec) -> _Plan:
    fast_after, fast_row = _fast_table(spec)
    full_before = spec.name in FULL_BEFORE_TABLES
    key_only_fill = _key_only_fill(spec) if full_before else ()
    if full_before and not key_only_fill:
        # Every old row would look key-only: `before` could never be given.
        raise ValueError(f"{spec.name}: no column tells a full before image from the key")
    return _Plan(
        spec=spec,
        columns=tuple(
            (c.name, c.decoder, c.nullable, c.base_type in _TOASTABLE) for c in spec.columns
        ),
        pk=tuple((c.name, c.decoder) for c in spec.columns if c.primary_key),
        pk_index=tuple(i for i, c in enumerate(spec.columns) if c.primary_key),
        names=frozenset(spec.column_names),
        fast_after=fast_after,
        fast_row=fast_row,
        full_before=full_before,
        key_only_fill=key_only_fill,
    )


_PLANS: Mapping[str, _Plan] = {name: _plan_of(spec) for name, spec in WMS_MODEL.items()}


#: Default of `Settings.wal_mark_max_skew_ms`: how far a WAL mark may be ahead of the
#: time Debezium read it.
WAL_MARK_MAX_SKEW_MS = 60_000
#: Latest time a watermark column holds: DateTime64(3, 'UTC') ends 2299-12-31T23:59:59.999Z.
_MAX_MARK_MS = 10_413_791_999_999
_MARK_DIGITS = re.compile(rb"[0-9]{1,19}")


def decode(
    region: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    wal_mark_max_skew_ms: int = WAL_MARK_MAX_SKEW_MS,
) -> Event:
    """Decode one record of `region`'s CDC topic; raises `DecodeError` when it can't.
    A WAL mark more than `wal_mark_max_skew_ms` ahead of its record's time is refused."""
    if value is not None:
        fast = _fast_change(region, value)
        if fast is not None:
            return fast
    where = f"{topic}[{partition}]@{offset}"
    if value is None:
        return _tombstone(region, _loads(key, where, "key"), where)
    v = _loads(value, where, "value")
    if not isinstance(v, dict):
        raise DecodeError("unexpected_shape", f"{where}: value is not a JSON object")
    try:
        if "op" in v:
            if v["op"] == "m":
                return _wal_mark(region, v, where, wal_mark_max_skew_ms)
            return _data_event(region, v, where)
        if "status" in v:
            return _tx_event(region, v, where)
        if len(v) == 1 and "ts_ms" in v:
            return _heartbeat(region, key, v, where)
    except DecodeError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise DecodeError("unexpected_shape", f"{where}: {type(exc).__name__}: {exc}") from exc
    raise DecodeError("unexpected_shape", f"{where}: neither a data event, BEGIN/END nor heartbeat")


def _fast_change(region: str, value: bytes) -> RowChange | None:
    """The common data event (create, update or snapshot read of a known table, every
    value as expected), as `_data_event` decodes it; None for any other record."""
    try:
        env = _FAST_ENVELOPE.decode(value)
        src = env.source
        op = _FAST_OPS.get(env.op)
        plan = _PLANS.get(src.table) if src.schema == _SOURCE_SCHEMA else None
        snapshot = _SNAPSHOTS.get(src.snapshot or "false")
        if op is None or plan is None or snapshot is None or src.name.rpartition(".")[2] != region:
            return None
        row = plan.fast_row(plan.fast_after.decode(env.after))
        before = None
        if plan.full_before and op is Op.UPDATE and env.before != _NULL:
            before = plan.fast_row(plan.fast_after.decode(env.before))
            if before is None:
                return None
    except (msgspec.MsgspecError, ValueError, ArithmeticError):
        return None
    if row is None:
        return None
    if before is not None:
        before = _full_image(plan, before)
    key = (row[plan.pk_index[0]],) if len(plan.pk_index) == 1 else _pk(plan, row)
    # RowChange(...) without the NamedTuple's Python-level __new__ (every field given).
    return _new_tuple(
        RowChange,
        (
            region,
            plan.spec.name,
            op,
            key,
            row,
            src.lsn,
            src.txId,
            src.ts_ms,
            snapshot,
            _NO_COLUMNS,
            NO_EXTRA,
            before,
        ),
    )


def _pk(plan: _Plan, row: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(row[i] for i in plan.pk_index)


def _loads(data: bytes | None, where: str, what: str) -> Any:
    if data is None:
        raise DecodeError("unexpected_shape", f"{where}: {what} is null")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed_json", f"{where}: {what}: {exc}") from exc


def _plan(region: str, schema: object, table: object, where: str) -> _Plan:
    plan = _PLANS.get(table) if schema == _SOURCE_SCHEMA and isinstance(table, str) else None
    if plan is None:
        raise DecodeError("unknown_table", f"{where}: {region} {schema}.{table}")
    return plan


def _check_region(region: str, server: object, where: str) -> None:
    # Debezium's logical server name is `<namespace>.<region>` (Region.topic_prefix).
    if not isinstance(server, str) or server.rpartition(".")[2] != region:
        raise DecodeError("region_mismatch", f"{where}: source {server!r} in region {region}")


def _data_event(region: str, v: dict[str, Any], where: str) -> RowChange | Truncate:
    src = v["source"]
    _check_region(region, src["name"], where)
    plan = _plan(region, src["schema"], src["table"], where)
    op = _OPS.get(v["op"])
    if op is None:
        if v["op"] == "t":
            return Truncate(region, plan.spec.name, src["lsn"], src["txId"], src["ts_ms"])
        raise DecodeError("unsupported_op", f"{where}: op {v['op']!r}")
    snapshot = _SNAPSHOTS.get(src.get("snapshot") or "false")
    if snapshot is None:
        raise DecodeError("unexpected_shape", f"{where}: snapshot {src.get('snapshot')!r}")
    lsn = _source_lsn(src, where)
    if op is Op.DELETE:
        # REPLICA IDENTITY DEFAULT: `before` holds the key; its other fields are fillers.
        before = v["before"]
        if not isinstance(before, dict):
            raise DecodeError("unexpected_shape", f"{where}: delete without before")
        key = _key(plan, before, where)
        return RowChange(
            region,
            plan.spec.name,
            op,
            key,
            None,
            lsn,
            src["txId"],
            src["ts_ms"],
            snapshot,
            before=_before(plan, before, where) if plan.full_before else None,
        )
    after = v["after"]
    if not isinstance(after, dict):
        raise DecodeError("unexpected_shape", f"{where}: {op.value} without after")
    row, unavailable, extra = _row(plan, after, where)
    key = _pk(plan, row)
    if unavailable and not unavailable.isdisjoint(plan.spec.primary_key):
        raise DecodeError("unavailable_key", f"{where}: key column unavailable")
    before = None
    if plan.full_before and op is Op.UPDATE:
        before = _before(plan, v.get("before"), where)
    return RowChange(
        region,
        plan.spec.name,
        op,
        key,
        row,
        lsn,
        src["txId"],
        src["ts_ms"],
        snapshot,
        unavailable,
        extra,
        before,
    )


def _before(plan: _Plan, before: object, where: str) -> tuple[object, ...] | None:
    """The typed old row of an update or delete, decoded like `after`: a malformed image
    is a `DecodeError`. None when the source sent no full image: null (an update under
    REPLICA IDENTITY DEFAULT), the key alone, or an unavailable (TOASTed) value."""
    if before is None:
        return None
    if not isinstance(before, dict):
        raise DecodeError("unexpected_shape", f"{where}: before is not an object")
    row, unavailable, _ = _row(plan, before, f"{where}: before")
    if unavailable:
        return None
    return _full_image(plan, row)


def _full_image(plan: _Plan, row: tuple[object, ...]) -> tuple[object, ...] | None:
    """`row` if it is a whole old row, None if it is a key-only image. JSON cannot say
    which: under REPLICA IDENTITY DEFAULT Debezium fills the non-key columns in (null, or
    the column's default or its type's zero). A value in a filled-in column other than
    its filler proves a full image; a row equal to the fillers is taken as key-only (for
    `FULL_BEFORE_TABLES` no real row is: their foreign keys are never 0)."""
    for i, filler in plan.key_only_fill:
        if row[i] != filler:
            return row
    return None


def _row(
    plan: _Plan, after: dict[str, Any], where: str
) -> tuple[tuple[object, ...], frozenset[str], dict[str, str]]:
    values: list[object] = []
    unavailable: list[str] = []
    seen = 0
    for name, dec, nullable, toastable in plan.columns:
        raw = after.get(name, _MISSING)
        if raw is None or raw is _MISSING:
            if raw is _MISSING:
                # A column dropped in the WMS: tolerable only where NULL is allowed.
                if not nullable:
                    raise DecodeError("missing_column", f"{where}: {plan.spec.name}.{name}")
            else:
                seen += 1
                if not nullable:
                    raise DecodeError("null_value", f"{where}: {plan.spec.name}.{name} is null")
            values.append(None)
            continue
        seen += 1
        if toastable and raw == UNAVAILABLE:
            unavailable.append(name)
            values.append(None)  # filled from the projected row by the writer
            continue
        try:
            values.append(dec(raw))
        except (TypeError, ValueError, OverflowError) as exc:
            raise DecodeError(
                "bad_value", f"{where}: {plan.spec.name}.{name}={raw!r}: {exc}"
            ) from exc
    extra: dict[str, str] = {}
    if seen != len(after):
        # Columns the model does not know (WMS ADD COLUMN): keep them as JSON text.
        for name, raw in after.items():
            if name not in plan.names:
                extra[name] = orjson.dumps(raw).decode()
    return tuple(values), frozenset(unavailable), extra


_MISSING: Any = object()


def _key(plan: _Plan, obj: Mapping[str, Any], where: str) -> tuple[object, ...]:
    try:
        return tuple(dec(obj[name]) for name, dec in plan.pk)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError("bad_key", f"{where}: {plan.spec.name} key {exc}") from exc


def _tx_event(region: str, v: dict[str, Any], where: str) -> TxBegin | TxEnd:
    tx, _, lsn = str(v["id"]).partition(":")
    status = v["status"]
    if status == "BEGIN":
        return TxBegin(region, int(tx), int(lsn), v["ts_ms"])
    if status == "END":
        counts: dict[str, int] = {}
        for dc in v["data_collections"] or ():
            schema, _, table = dc["data_collection"].rpartition(".")
            if schema and schema != _SOURCE_SCHEMA:
                table = dc["data_collection"]
            counts[table] = counts.get(table, 0) + int(dc["event_count"])
        return TxEnd(region, int(tx), int(lsn), int(v["event_count"]), counts, v["ts_ms"])
    raise DecodeError("unexpected_shape", f"{where}: transaction status {status!r}")


def _source_lsn(src: dict[str, Any], where: str) -> int:
    lsn = src["lsn"]
    if type(lsn) is not int:
        raise DecodeError("missing_lsn", f"{where}: source.lsn {lsn!r}")
    return lsn


def _wal_mark(region: str, v: dict[str, Any], where: str, max_skew_ms: int) -> WalMark:
    """The heartbeat action's logical-decoding message; any other message is unexpected
    (the connector captures only this prefix), so it is dead-lettered, not ignored.

    Any WMS login can write a message with this prefix, so the mark is checked before it
    may move a watermark: plain decimal digits (no sign, no `_`), within what the
    watermark column holds (a larger one crashed the writer, replayed on every restart),
    and not after the record's own time (Debezium's `ts_ms`, when it read the message,
    later than the WMS clock it carries) plus `max_skew_ms` of clock skew (a future mark
    would fake freshness until that time)."""
    src, msg = v["source"], v["message"]
    _check_region(region, src["name"], where)
    if msg["prefix"] != WAL_MARK_PREFIX:
        raise DecodeError("unexpected_message", f"{where}: message prefix {msg['prefix']!r}")
    lsn = _source_lsn(src, where)
    try:
        content = base64.b64decode(msg["content"], validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise DecodeError(
            "unexpected_shape", f"{where}: message content {msg['content']!r}"
        ) from exc
    if not _MARK_DIGITS.fullmatch(content):
        raise DecodeError("implausible_wal_mark", f"{where}: content {content[:40]!r}")
    ts_ms = int(content)
    seen = [t for t in (v.get("ts_ms"), src.get("ts_ms")) if type(t) is int]
    if ts_ms > _MAX_MARK_MS or not seen or ts_ms > max(seen) + max_skew_ms:
        raise DecodeError(
            "implausible_wal_mark",
            f"{where}: mark {ts_ms} vs record time {max(seen, default=None)}"
            f" (allowed skew {max_skew_ms} ms, limit {_MAX_MARK_MS})",
        )
    return WalMark(region, lsn, ts_ms)


def _heartbeat(region: str, key: bytes | None, v: dict[str, Any], where: str) -> Heartbeat:
    if key is not None:
        k = _loads(key, where, "key")
        if isinstance(k, dict) and "serverName" in k:
            _check_region(region, k["serverName"], where)
    ts = v["ts_ms"]
    if type(ts) is not int:
        raise DecodeError("unexpected_shape", f"{where}: heartbeat ts_ms {ts!r}")
    return Heartbeat(region, ts)


def _tombstone(region: str, k: Any, where: str) -> Tombstone:
    if not isinstance(k, dict) or not isinstance(k.get(ROUTER_FIELD), str):
        raise DecodeError("unexpected_shape", f"{where}: tombstone key {k!r}")
    physical: str = k[ROUTER_FIELD]  # <namespace>.<region>.<schema>.<table>
    parts = physical.split(".")
    if len(parts) != 4 or parts[1] != region:
        raise DecodeError("region_mismatch", f"{where}: tombstone of {physical}")
    schema, table = parts[2], parts[3]
    plan = _plan(region, schema, table, where)
    return Tombstone(region, plan.spec.name, _key(plan, k, where))
