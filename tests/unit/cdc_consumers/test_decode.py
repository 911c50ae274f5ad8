"""Decoding of real Debezium records captured from the running chain (samples/*.json)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdc_consumers.decode import DecodeError, _data_event, _fast_change, decode
from schemas.errors import TerminalError
from schemas.events import (
    UNAVAILABLE,
    Event,
    Heartbeat,
    Op,
    RowChange,
    Snapshot,
    Tombstone,
    Transaction,
    Truncate,
    TxBegin,
    TxEnd,
    WalMark,
)

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return data


def raw(s: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    k = None if s["key"] is None else orjson.dumps(s["key"])
    v = None if s["value"] is None else orjson.dumps(s["value"])
    return k, v


def dec(name: str, region: str | None = None) -> Event:
    s = sample(name)
    return decode(region or s["topic"].split(".")[1], s["topic"], 0, s["offset"], *raw(s))


def test_insert_types() -> None:
    e = dec("create_lot")
    assert isinstance(e, RowChange)
    assert (e.region, e.table, e.op, e.key, e.tx_id) == ("us-west", "lot", Op.CREATE, (1,), 809)
    row = e.as_dict()
    assert row is not None
    assert row["production_date"] == date(2026, 1, 2)
    assert row["expiry_date"] == date(2027, 3, 4)
    assert row["origin_country"] == "CN"
    assert row["first_received_at"] == datetime(2026, 11, 27, 7, 56, 15, 500298, UTC)
    assert e.lsn == 27644040
    assert not e.is_snapshot
    assert not e.unavailable
    assert e.extra == {}


def test_numeric_jsonb_and_booleans() -> None:
    sku = dec("snapshot_sku_jsonb")
    assert isinstance(sku, RowChange)
    row = sku.as_dict()
    assert row is not None
    assert row["weight_kg"] == Decimal("0.500")
    assert row["unit_cost"] is None
    assert row["attributes"] == '{"a": [1, 2.50, "x"]}'
    loc = dec("create_location")
    assert isinstance(loc, RowChange)
    assert loc.as_dict() == {
        "id": 1,
        "warehouse_id": 1,
        "code": "R-01",
        "zone": "R",
        "loc_type": "RECEIVING",
        "sellable": False,
        "pick_seq": 0,
        "active": True,
    }


def test_update_and_delete_and_tombstone() -> None:
    up = dec("update_inventory")
    assert isinstance(up, RowChange)
    assert up.op is Op.UPDATE
    assert up.row is not None
    d = dec("delete_inventory")
    assert isinstance(d, RowChange)
    assert d.is_delete
    assert d.row is None
    assert d.key == (1,)
    t = dec("tombstone_inventory")
    assert t == Tombstone("us-west", "inventory", (1,))


def test_snapshot_reads() -> None:
    first = dec("snapshot_first")
    owner = dec("snapshot_owner")
    assert isinstance(first, RowChange)
    assert first.op is Op.READ
    assert first.snapshot is Snapshot.FIRST
    assert first.tx_id == 869
    assert isinstance(owner, RowChange)
    assert owner.snapshot is Snapshot.LAST_IN_DATA_COLLECTION
    assert not owner.is_last_of_snapshot
    tx = Transaction.from_snapshot([first, owner])
    assert tx.commit_lsn == 33036104
    assert tx.tx_id is None


def test_begin_end_heartbeat() -> None:
    assert dec("begin") == TxBegin("us-west", 809, 27622072, 1795766175514)
    end = dec("end_multi_table")
    assert isinstance(end, TxEnd)
    assert (end.tx_id, end.commit_lsn, end.event_count) == (809, 27644584, 6)
    assert end.table_counts == {"warehouse": 1, "sku": 1, "lot": 1, "owner": 1, "location": 2}
    hb = dec("heartbeat")
    assert isinstance(hb, Heartbeat)
    assert hb.region == "us-west"
    assert hb.ts.tzinfo is not None


def test_transaction_assembly_checks_counts() -> None:
    names = ["create_warehouse", "create_owner", "create_sku_toast", "create_location",
             "create_lot"]  # fmt: skip
    changes = [dec(n) for n in names]
    end = dec("end_multi_table")
    assert isinstance(end, TxEnd)
    rows = [c for c in changes if isinstance(c, RowChange)]
    with pytest.raises(TerminalError):
        Transaction.from_end(end, rows)  # one location missing
    # The missing event counted as dead-lettered makes it whole.
    assert Transaction.from_end(end, rows, {"location": 1}).commit_lsn == 27644584


def test_unavailable_placeholder_is_never_a_value() -> None:
    e = dec("update_sku_unavailable")
    assert isinstance(e, RowChange)
    assert e.unavailable == frozenset({"name", "attributes"})
    row = e.as_dict()
    assert row is not None
    assert row["name"] is None
    assert row["attributes"] is None
    assert row["uom"] == "BOX"


def test_unknown_columns_kept_as_json_text() -> None:
    e = dec("create_owner_added_columns")
    assert isinstance(e, RowChange)
    assert e.extra == {"tier": '"GOLD"', "credit": '"12.50"'}
    u = dec("update_owner_added_columns")
    assert isinstance(u, RowChange)
    assert u.extra == {"tier": "null", "credit": "null"}


@pytest.mark.parametrize(
    "name", ["create_unknown_table", "snapshot_unknown_table_last", "truncate_unknown_table"]
)
def test_unknown_table_is_an_error(name: str) -> None:
    with pytest.raises(DecodeError) as err:
        dec(name)
    assert err.value.reason == "unknown_table"
    assert isinstance(err.value, TerminalError)


def test_wal_mark() -> None:
    mark = dec("wal_mark")
    assert mark == WalMark("us-west", 27234368, 1795809021937)
    assert mark.ts.tzinfo is not None


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("prefix", "someone.else", "unexpected_message"),
        ("content", "bm90IGEgbnVtYmVy", "implausible_wal_mark"),  # "not a number"
        ("content", "%%%", "unexpected_shape"),
    ],
)
def test_any_other_message_is_dead_lettered(field: str, value: str, reason: str) -> None:
    s = sample("wal_mark")
    s["value"]["message"][field] = value
    with pytest.raises(DecodeError) as err:
        decode("us-west", s["topic"], 0, s["offset"], *raw(s))
    assert err.value.reason == reason


def wal_mark(content: bytes, envelope_ts_ms: object = 1795809021992) -> tuple[bytes, bytes]:
    """The sample WAL mark with other content (and envelope time); source.ts_ms is
    earlier than the mark in real records (see samples/wal_mark.json)."""
    s = sample("wal_mark")
    s["value"]["message"]["content"] = base64.b64encode(content).decode()
    s["value"]["ts_ms"] = envelope_ts_ms
    k, v = raw(s)
    assert k is not None
    assert v is not None
    return k, v


@pytest.mark.parametrize(
    "content",
    [
        b"10000000000000000000000",  # beyond int64: crashed the writer (OverflowError)
        b"9223372036854775807",  # int64 max, beyond any DateTime64
        b"-1",
        b"+1795809021937",
        b"1_795_809_021_937",
        b" 1795809021937",
        b"1795809021937.5",
        b"",
        b"\xff\xfe",
        str(1795809021992 + 60_001).encode(),  # ahead of the record's time beyond the skew
        str(1795809021992 + 365 * 86_400_000).encode(),  # a year ahead: fake freshness
    ],
)
def test_an_implausible_wal_mark_is_dead_lettered_never_applied(content: bytes) -> None:
    with pytest.raises(DecodeError) as err:
        decode("us-west", "wms.us-west.cdc", 0, 39, *wal_mark(content))
    assert err.value.reason == "implausible_wal_mark"


def test_a_wal_mark_may_be_ahead_of_its_record_by_the_clock_skew_allowed() -> None:
    ahead = str(1795809021992 + 60_000).encode()
    mark = decode("us-west", "wms.us-west.cdc", 0, 39, *wal_mark(ahead))
    assert isinstance(mark, WalMark)
    assert mark.ts_ms == 1795809021992 + 60_000
    with pytest.raises(DecodeError) as err:
        decode("us-west", "wms.us-west.cdc", 0, 39, *wal_mark(ahead), wal_mark_max_skew_ms=1000)
    assert err.value.reason == "implausible_wal_mark"
    # An old mark is plausible (it never moves a watermark back); no record time is not.
    assert isinstance(decode("us-west", "t", 0, 39, *wal_mark(b"0")), WalMark)
    s = sample("wal_mark")
    del s["value"]["ts_ms"], s["value"]["source"]["ts_ms"]
    with pytest.raises(DecodeError) as err:
        decode("us-west", "t", 0, 39, *raw(s))
    assert err.value.reason == "implausible_wal_mark"


def test_a_truncate_assembles_into_its_transaction() -> None:
    begin, truncate, end = dec("begin_truncate"), dec("truncate_inventory_txn"), dec("end_truncate")
    assert isinstance(begin, TxBegin)
    assert isinstance(end, TxEnd)
    assert isinstance(truncate, Truncate)
    assert (truncate.table, truncate.tx_id) == ("inventory_txn", begin.tx_id)
    tx = Transaction.from_end(end, [truncate])
    assert tx.changes == (truncate,)


def test_truncate_of_a_known_table() -> None:
    s = sample("truncate_unknown_table")
    s["value"]["source"]["table"] = "inventory"
    e = decode("zzsample", s["topic"], 0, 18, *raw(s))
    assert e == Truncate("zzsample", "inventory", 33042264, 874, s["value"]["source"]["ts_ms"])


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{not json", "malformed_json"),
        (None, b"[1, 2]", "unexpected_shape"),
        (None, b'{"foo": 1}', "unexpected_shape"),
        (b"\xff\xfe", None, "malformed_json"),
    ],
)
def test_malformed_bytes(key: bytes | None, value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode("us-west", "wms.us-west.cdc", 0, 1, key, value)
    assert err.value.reason == reason


def test_bad_value_and_region_mismatch() -> None:
    s = sample("create_lot")
    s["value"]["after"]["expiry_date"] = "2027-03-04"
    with pytest.raises(DecodeError, match="expiry_date") as err:
        decode("us-west", s["topic"], 0, 1, *raw(s))
    assert err.value.reason == "bad_value"
    with pytest.raises(DecodeError) as err2:
        dec("create_lot", region="eu-central")
    assert err2.value.reason == "region_mismatch"


# The fast path (msgspec, generated rows) must give exactly the checked path's event for
# every record it takes, and leave every other record to the checked path.
TAKEN = ["create_inventory", "create_inventory_txn", "create_location", "create_lot",
         "create_owner", "create_sku_toast", "create_warehouse", "snapshot_first",
         "snapshot_owner", "snapshot_sku_jsonb", "update_inventory"]  # fmt: skip
LEFT = ["create_owner_added_columns", "update_owner_added_columns", "update_sku_unavailable",
        "delete_inventory", "create_unknown_table", "truncate_unknown_table", "begin",
        "end_multi_table", "heartbeat", "wal_mark", "truncate_inventory_txn"]  # fmt: skip


def checked(s: dict[str, Any]) -> Event:
    region = s["topic"].split(".")[1]
    return _data_event(region, s["value"], "here")


@pytest.mark.parametrize("name", TAKEN)
def test_the_fast_path_takes_common_changes_and_equals_the_checked_path(name: str) -> None:
    s = sample(name)
    fast = _fast_change(s["topic"].split(".")[1], orjson.dumps(s["value"]))
    assert fast is not None
    assert fast == checked(s)


@pytest.mark.parametrize("name", LEFT)
def test_the_fast_path_leaves_everything_else_to_the_checked_path(name: str) -> None:
    s = sample(name)
    assert _fast_change(s["topic"].split(".")[1], orjson.dumps(s["value"])) is None


@pytest.mark.parametrize(
    ("name", "column", "value"),
    [
        ("create_sku_toast", "weight_kg", 0.5),  # a JSON number: the checked path refuses
        ("create_sku_toast", "weight_kg", "NaN"),
        ("create_sku_toast", "weight_kg", UNAVAILABLE),
        ("create_sku_toast", "name", UNAVAILABLE),
        ("create_sku_toast", "attributes", UNAVAILABLE),
        ("create_sku_toast", "owner_id", True),  # an integer column
        ("create_sku_toast", "owner_id", 1.0),
        ("create_sku_toast", "owner_id", "1"),
        ("create_sku_toast", "owner_id", 2**70),
        ("create_sku_toast", "sku_code", None),  # NOT NULL
        ("create_sku_toast", "barcode", "x"),
        ("create_sku_toast", "created_at", "2026-11-27T07:56:15.500298"),  # no zone
        ("create_sku_toast", "created_at", "2026-11-27T07:56:15.5002981Z"),
        ("create_sku_toast", "created_at", "2026-11-27 07:56:15Z"),
        ("create_sku_toast", "created_at", 1795766175514),
        ("create_location", "sellable", 1),  # a boolean column
        ("create_location", "sellable", None),
        ("create_lot", "expiry_date", "2027-03-04"),  # days since 1970, as an integer
        ("create_lot", "expiry_date", 10**9),
    ],
)
def test_odd_values_take_the_fast_path_only_to_the_checked_paths_result(
    name: str, column: str, value: object
) -> None:
    s = sample(name)
    s["value"]["after"][column] = value
    try:
        expected: Event | None = checked(s)
    except DecodeError:
        expected = None
    fast = _fast_change(s["topic"].split(".")[1], json.dumps(s["value"]).encode())
    assert fast is None or fast == expected


def test_the_fast_path_converts_other_zones_to_utc_like_the_checked_path() -> None:
    s = sample("create_lot")
    s["value"]["after"]["first_received_at"] = "2026-11-27T09:56:15.500298+02:00"
    fast = _fast_change("us-west", orjson.dumps(s["value"]))
    assert fast is not None
    assert fast == checked(s)
    row = fast.as_dict()
    assert row is not None
    assert row["first_received_at"] == datetime(2026, 11, 27, 7, 56, 15, 500298, UTC)
    assert isinstance(row["first_received_at"], datetime)
    assert row["first_received_at"].tzinfo is UTC


def test_a_missing_or_extra_column_or_other_region_is_not_taken() -> None:
    s = sample("create_lot")
    del s["value"]["after"]["origin_country"]  # nullable: the checked path accepts it
    assert _fast_change("us-west", orjson.dumps(s["value"])) is None
    assert isinstance(checked(s), RowChange)
    s = sample("create_lot")
    assert _fast_change("eu-central", orjson.dumps(s["value"])) is None


# `before`: the old row of updates and deletes of FULL_BEFORE_TABLES (REPLICA IDENTITY
# FULL sends it whole), typed like `after`; None wherever the source did not send it whole.
OLD_INVENTORY = {
    **sample("update_inventory")["value"]["after"],
    "qty_on_hand": 9,
    "qty_allocated": 2,
    "status": "AVAILABLE",
    "last_movement_at": "2026-11-27T07:50:00.000001Z",
    "version": 1,
}
# An inbound line's old row as a key-only image of it reads (REPLICA IDENTITY DEFAULT):
# the key, Debezium's fillers for NOT NULL columns (0, the column default), nulls.
KEY_ONLY_INBOUND_LINE = {
    "id": 1, "inbound_order_id": 0, "sku_id": 0, "lot_no": None, "production_date": None,
    "expiry_date": None, "qty_expected": 0, "qty_received": 0, "qty_damaged": 0,
    "updated_at": "1970-01-01T00:00:00.000000Z",
}  # fmt: skip


def with_before(
    name: str, before: object, op: str | None = None, table: str | None = None
) -> dict[str, Any]:
    """Sample `name` with another `before` (and op, and source table)."""
    s = sample(name)
    s["value"]["before"] = before
    if op is not None:
        s["value"]["op"] = op
    if table is not None:
        s["value"]["source"]["table"] = table
    return s


def decoded(s: dict[str, Any]) -> RowChange:
    e = decode(s["topic"].split(".")[1], s["topic"], 0, s["offset"], *raw(s))
    assert isinstance(e, RowChange)
    return e


def typed_inventory(values: dict[str, Any]) -> tuple[object, ...]:
    s = sample("create_inventory")
    s["value"]["after"] = values
    row = decoded(s).row
    assert row is not None
    return row


def test_an_update_of_a_full_before_table_carries_the_typed_old_row() -> None:
    s = with_before("update_inventory", OLD_INVENTORY)
    e = decoded(s)
    assert e.before == typed_inventory(OLD_INVENTORY)
    assert e.before is not None
    old = dict(zip(e.spec.column_names, e.before, strict=True))
    assert (old["qty_on_hand"], old["qty_allocated"], old["status"]) == (9, 2, "AVAILABLE")
    assert old["last_movement_at"] == datetime(2026, 11, 27, 7, 50, 0, 1, UTC)
    assert e.row == typed_inventory(s["value"]["after"])
    # The fast path takes it, and gives the checked path's event.
    assert _fast_change("us-west", orjson.dumps(s["value"])) == e == checked(s)


def test_a_delete_of_a_full_before_table_carries_the_typed_old_row() -> None:
    e = decoded(with_before("delete_inventory", OLD_INVENTORY))
    assert (e.op, e.key, e.row) == (Op.DELETE, (1,), None)
    assert e.before == typed_inventory(OLD_INVENTORY)


def test_a_key_only_before_is_no_old_row() -> None:
    """REPLICA IDENTITY DEFAULT: a delete's before is the key and Debezium's fillers,
    which decode fine but are no row; an update's before is null."""
    e = dec("delete_inventory")  # captured from a DEFAULT identity table
    assert isinstance(e, RowChange)
    assert (e.key, e.before) == ((1,), None)
    up = dec("update_inventory")
    assert isinstance(up, RowChange)
    assert up.before is None
    line = decoded(with_before("delete_inventory", KEY_ONLY_INBOUND_LINE, table="inbound_line"))
    assert (line.table, line.key, line.before) == ("inbound_line", (1,), None)


@pytest.mark.parametrize(
    ("column", "value", "typed"),
    [("sku_id", 3, 3), ("qty_expected", 10, 10), ("lot_no", "L-1", "L-1"),
     ("expiry_date", 20400, date(2025, 11, 8))],
)  # fmt: skip
def test_one_real_value_where_a_key_only_image_has_a_filler_makes_it_whole(
    column: str, value: object, typed: object
) -> None:
    before = {**KEY_ONLY_INBOUND_LINE, column: value}
    e = decoded(with_before("delete_inventory", before, table="inbound_line"))
    assert e.before is not None
    assert e.before[e.spec.index[column]] == typed


def test_inserts_and_other_tables_have_no_old_row() -> None:
    assert decoded(sample("create_inventory")).before is None
    assert decoded(with_before("create_inventory", OLD_INVENTORY)).before is None
    assert decoded(with_before("create_inventory", OLD_INVENTORY, op="r")).before is None
    # location is not in FULL_BEFORE_TABLES: its before is never decoded, even when whole.
    loc = sample("create_location")["value"]["after"]
    for op in ("u", "d"):
        for before in (loc, {**loc, "sellable": "not a boolean"}):
            e = decoded(with_before("create_location", before, op))
            assert (e.table, e.op.value, e.before) == ("location", op, None)


def test_an_unavailable_value_in_the_old_row_makes_it_unknown() -> None:
    s = with_before("update_inventory", {**OLD_INVENTORY, "status": UNAVAILABLE})
    e = decoded(s)
    assert e.before is None
    assert e.row == typed_inventory(s["value"]["after"])
    assert _fast_change("us-west", orjson.dumps(s["value"])) is None  # left to the checked


@pytest.mark.parametrize("name", ["update_inventory", "delete_inventory"])
@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("qty_on_hand", "9", "bad_value"),
        ("in_date", "2026-11-27T07:50:00", "bad_value"),  # no zone
        ("status", None, "null_value"),
        ("sku_id", None, "missing_column"),  # None here: the column is left out
    ],
)
def test_a_malformed_old_row_is_dead_lettered_like_a_malformed_row(
    name: str, column: str, value: object, reason: str
) -> None:
    before = {**OLD_INVENTORY, column: value}
    if reason == "missing_column":
        del before[column]
    s = with_before(name, before)
    with pytest.raises(DecodeError) as err:
        decoded(s)
    assert err.value.reason == reason
    assert f"before: inventory.{column}" in err.value.detail
    assert _fast_change("us-west", orjson.dumps(s["value"])) is None


def test_an_old_row_that_is_not_an_object_is_dead_lettered() -> None:
    with pytest.raises(DecodeError) as err:
        decoded(with_before("update_inventory", [1, 2]))
    assert err.value.reason == "unexpected_shape"
    assert "before is not an object" in err.value.detail
