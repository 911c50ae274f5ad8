"""Decode one Kafka record of a region's CDC topic into a typed `Event`.

The topic carries, in commit order, Debezium data events of the WMS tables, transaction
BEGIN/END records and heartbeats (infra/connect.py routes them all there). Anything that
can't be decoded exactly, including a table the projection doesn't know, raises
`DecodeError`: the consumer dead-letters it with the reason and the original bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from cdc_consumers.errors import DecodeError
from schemas.events import (
    UNAVAILABLE,
    Event,
    Heartbeat,
    Op,
    RowChange,
    Snapshot,
    Tombstone,
    Truncate,
    TxBegin,
    TxEnd,
)
from schemas.wms_model import WMS_MODEL, Decoder, TableSpec

__all__ = ["DecodeError", "decode"]

#: Key field the ByLogicalTableRouter adds: the topic the record would have had.
ROUTER_FIELD = "__dbz__physicalTableIdentifier"
_SOURCE_SCHEMA = "public"
_TOASTABLE = frozenset({"text", "jsonb", "numeric", "char"})
_OPS: Mapping[str, Op] = {o.value: o for o in Op}
_SNAPSHOTS: Mapping[str, Snapshot] = {s.value: s for s in Snapshot}


@dataclass(frozen=True, slots=True)
class _Plan:
    """Per-table decoding plan, precomputed once: (name, decoder, nullable, toastable)."""

    spec: TableSpec
    columns: tuple[tuple[str, Decoder, bool, bool], ...]
    pk: tuple[tuple[str, Decoder], ...]
    names: frozenset[str]


_PLANS: Mapping[str, _Plan] = {
    name: _Plan(
        spec=spec,
        columns=tuple(
            (c.name, c.decoder, c.nullable, c.base_type in _TOASTABLE) for c in spec.columns
        ),
        pk=tuple((c.name, c.decoder) for c in spec.columns if c.primary_key),
        names=frozenset(spec.column_names),
    )
    for name, spec in WMS_MODEL.items()
}


def decode(
    region: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> Event:
    """Decode one record of `region`'s CDC topic; raises `DecodeError` when it can't."""
    where = f"{topic}[{partition}]@{offset}"
    if value is None:
        return _tombstone(region, _loads(key, where, "key"), where)
    v = _loads(value, where, "value")
    if not isinstance(v, dict):
        raise DecodeError("unexpected_shape", f"{where}: value is not a JSON object")
    try:
        if "op" in v:
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
    lsn = src["lsn"]
    if type(lsn) is not int:
        raise DecodeError("missing_lsn", f"{where}: source.lsn {lsn!r}")
    if op is Op.DELETE:
        # REPLICA IDENTITY DEFAULT: `before` holds the key; its other fields are fillers.
        before = v["before"]
        if not isinstance(before, dict):
            raise DecodeError("unexpected_shape", f"{where}: delete without before")
        key = _key(plan, before, where)
        return RowChange(
            region, plan.spec.name, op, key, None, lsn, src["txId"], src["ts_ms"], snapshot
        )
    after = v["after"]
    if not isinstance(after, dict):
        raise DecodeError("unexpected_shape", f"{where}: {op.value} without after")
    row, unavailable, extra = _row(plan, after, where)
    key = tuple(row[plan.spec.index[name]] for name, _ in plan.pk)
    if unavailable and not unavailable.isdisjoint(plan.spec.primary_key):
        raise DecodeError("unavailable_key", f"{where}: key column unavailable")
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
    )


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
