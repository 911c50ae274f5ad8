"""Stock figures kept incrementally from the change events (wms/OPERATIONS.md "Stock
figures"): the one definition of every figure on the write path.

Per region, `RegionFigures` holds in memory what the figures need and nothing more:
per (warehouse id, SKU id) the sums of its balance rows, how many there are, its open
inbound quantity, the lot expiries of the rows counted in `available` (a min is not
invertible: a count per date is) and its latest movement; and the master data that
names a key or decides where a row counts (owners', warehouses' and SKUs' codes,
locations' `sellable`, lots' expiry, inbound orders and lines). A balance row is added
with its after image and taken out with its before image (REPLICA IDENTITY FULL on
`inventory`, see infra), so the balance rows themselves are never held.

What a change cannot be applied from (a location turning sellable or not, a lot's expiry
changing, a ledger row deleted or moved back in time) marks its SKUs for a reload:
`FigureKeeper` reads their state from ClickHouse at that commit, a targeted slower path
for rare changes. An update without a before image (a WMS whose `inventory` lacks
REPLICA IDENTITY FULL, warned about) reloads its SKU at the batch's last commit instead:
those figures are exact at batch boundaries only. Owner, warehouse and SKU renames move
keys in memory.

`FigureKeeper` loads a region's state at its watermark when the region is assigned to
the writer (and after a truncate or a snapshot), applies each batch, and writes a
version of every key a transaction changed into `stock_current` at that transaction's
commit LSN (a delete for a key that vanished or lost its name), so the served figures
are exact at every commit. No ClickHouse read on the streaming path but those reloads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any

import structlog
from clickhouse_connect.driver.client import Client

from read_model.client import ColumnInserter
from read_model.ddl import STOCK_FIGURES
from read_model.errors import classify
from read_model.queries import _cuts, _served, latest_versions
from schemas.events import Op, RowChange, Transaction, Truncate
from schemas.wms_model import WMS_MODEL

log = structlog.get_logger(__name__)

#: Status figures in `STOCK_FIGURES` order, after on_hand, available and allocated.
STATUS_FIGURES = ("PENDING_PUTAWAY", "QC_HOLD", "FROZEN", "DAMAGED", "RETURNED", "EXPIRED")
_STATUS_INDEX = {s: 3 + i for i, s in enumerate(STATUS_FIGURES)}
_SUMS = 3 + len(STATUS_FIGURES)
#: Inbound order statuses whose lines count in `inbound_expected`.
OPEN_INBOUND = frozenset({"CREATED", "IN_TRANSIT", "ARRIVED", "RECEIVING"})
#: Tables whose rows the figures read; a truncate of one reloads the region.
FIGURE_TABLES = frozenset(
    {"owner", "warehouse", "sku", "location", "lot", "inventory", "inbound_order",
     "inbound_line", "inventory_txn"}
)  # fmt: skip

_NONE: Mapping[tuple[str, int], Sequence[object]] = MappingProxyType({})

Key = tuple[int, int]  # (warehouse id, SKU id) in one region
Name = tuple[str, str, str]  # (owner code, warehouse code, SKU code): the served key
Figures = tuple[Any, ...]  # in STOCK_FIGURES order
#: A version of `stock_current`: (region, commit LSN, key, figures or None: a delete).
Version = tuple[str, int, Name, Figures | None]


def _utc(value: Any) -> Any:
    """A DateTime64(6, 'UTC') as read back (naive UTC) like the decoder gives it (aware)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _columns(table: str, *names: str) -> tuple[int, ...]:
    index = WMS_MODEL[table].index
    return tuple(index[n] for n in names)


_INV = _columns(
    "inventory", "warehouse_id", "sku_id", "location_id", "lot_id", "status", "qty_on_hand",
    "qty_allocated",
)  # fmt: skip
_TXN = _columns("inventory_txn", "warehouse_id", "sku_id", "occurred_at")
_SKU = _columns("sku", "owner_id", "sku_code")
_LOT = _columns("lot", "sku_id", "expiry_date")
_ORDER = _columns("inbound_order", "warehouse_id", "status")
_LINE = _columns("inbound_line", "inbound_order_id", "sku_id", "qty_expected", "qty_received")
(_CODE_OWNER,) = _columns("owner", "code")
(_CODE_WAREHOUSE,) = _columns("warehouse", "code")
(_SELLABLE,) = _columns("location", "sellable")


class KeyState:
    """What one (warehouse, SKU)'s figures are computed from."""

    __slots__ = ("balances", "expiry", "inbound", "moved_at", "sums")

    def __init__(self) -> None:
        self.sums = [0] * _SUMS  # on_hand, available, allocated, then STATUS_FIGURES
        self.balances = 0  # balance rows
        self.inbound = 0  # open inbound quantity
        self.expiry: dict[date, int] = {}  # expiry → rows counted in available
        self.moved_at: datetime | None = None

    @property
    def exists(self) -> bool:
        """A key with no balance rows and no open inbound quantity is absent."""
        return self.balances > 0 or self.inbound > 0

    def figures(self) -> Figures:
        return (
            *self.sums,
            self.inbound,
            min(self.expiry) if self.expiry else None,
            self.moved_at,
        )


@dataclass(slots=True)
class Line:
    order: int
    sku: int
    open_qty: int  # max(qty_expected - qty_received, 0)


@dataclass
class RegionFigures:
    """One region's figure state; `apply` the region's changes in commit order."""

    region: str
    owners: dict[int, str] = field(default_factory=dict)
    warehouses: dict[int, str] = field(default_factory=dict)
    skus: dict[int, tuple[int, str]] = field(default_factory=dict)  # id → (owner id, code)
    sellable: dict[int, bool] = field(default_factory=dict)  # location id → sellable
    lots: dict[int, tuple[int, date | None]] = field(default_factory=dict)  # → (sku, expiry)
    orders: dict[int, tuple[int, bool]] = field(default_factory=dict)  # → (warehouse, open)
    lines: dict[int, Line] = field(default_factory=dict)
    order_lines: dict[int, set[int]] = field(default_factory=dict)
    keys: dict[Key, KeyState] = field(default_factory=dict)
    #: warehouses of each SKU's keys (a SKU's rename or reload touches exactly these)
    sku_keys: dict[int, set[int]] = field(default_factory=dict)
    #: keys whose figures may have changed since the last `take_changes`
    dirty: set[Key] = field(default_factory=set)
    #: SKUs whose state must be read again at this commit (see the module docstring)
    reload_skus: set[int] = field(default_factory=set)
    #: SKUs updated without a before image: read again at the batch's last commit
    reload_at_cut: set[int] = field(default_factory=set)
    #: locations whose `sellable` flipped: their SKUs are reloaded
    reload_locations: set[int] = field(default_factory=set)
    #: served names and figures (what `stock_current` has now), and each key's name
    served: dict[Name, Figures] = field(default_factory=dict)
    names: dict[Key, Name] = field(default_factory=dict)
    #: served names no key has (found by a load): deleted by the next `take_changes`
    orphans: set[Name] = field(default_factory=set)
    #: (commit LSN, LSN) of the last change applied: a replay is skipped
    applied: tuple[int, int] = (0, 0)
    applied_rows: set[tuple[str, tuple[object, ...]]] = field(default_factory=set)
    warned_no_before: bool = False

    # -- applying changes ----------------------------------------------------------

    def apply(
        self,
        transactions: Iterable[Transaction],
        befores: Mapping[tuple[str, int], Sequence[object]] = _NONE,
    ) -> None:
        """Apply the changes of `transactions` not applied yet (a replay after a failed
        write, or of what the state was loaded at, changes nothing). `befores`: the rows
        of deletes that came without a before image, by (table, LSN)."""
        for tx in transactions:
            commit = tx.commit_lsn
            if commit < self.applied[0]:
                continue
            for ch in tx.changes:
                if isinstance(ch, Truncate):
                    raise ValueError("a truncate reloads the region: not applied in memory")
                position = (commit, ch.lsn)
                if position < self.applied:
                    continue
                # One WAL record may carry several rows (a multi-row insert), so several
                # changes share an LSN, and a spilled transaction's chunk may end among
                # them: those applied at `applied` are told apart by their row.
                row_id = (ch.table, ch.key)
                if position == self.applied:
                    if row_id in self.applied_rows:
                        continue
                    self.applied_rows.add(row_id)
                else:
                    self.applied, self.applied_rows = position, {row_id}
                self._change(ch, befores)

    def _change(self, ch: RowChange, befores: Mapping[tuple[str, int], Sequence[object]]) -> None:
        handler = _HANDLERS.get(ch.table)
        if handler is not None:
            # Typed values of the WMS model (bigint ids, text codes, ...), as Any.
            row: Any = ch.row
            before: Any = ch.before
            if before is None and row is None:
                before = befores.get((ch.table, ch.lsn))
            handler(self, ch.key[0], ch.op, before, row)

    def _key(self, key: Key) -> KeyState:
        state = self.keys.get(key)
        if state is None:
            state = self.keys[key] = KeyState()
            self.sku_keys.setdefault(key[1], set()).add(key[0])
        return state

    def _balance(self, row: Sequence[Any], sign: int) -> None:
        """Add (sign 1) or take out (-1) one balance row's share of its key's figures."""
        warehouse, sku, location, lot, status, on_hand, allocated = (row[i] for i in _INV)
        key = (warehouse, sku)
        state = self._key(key)
        sums = state.sums
        sums[0] += sign * on_hand
        sums[2] += sign * allocated
        if status == "AVAILABLE":
            if self.sellable.get(location, False):
                sums[1] += sign * (on_hand - allocated)
                if on_hand > allocated and lot is not None:
                    expiry = self.lots.get(lot, (0, None))[1]
                    if expiry is not None:
                        count = state.expiry.get(expiry, 0) + sign
                        if count:
                            state.expiry[expiry] = count
                        else:
                            del state.expiry[expiry]
        else:
            i = _STATUS_INDEX.get(status)
            if i is not None:
                sums[i] += sign * on_hand
        state.balances += sign
        self.dirty.add(key)

    def _inventory(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        if op is Op.UPDATE and before is None:
            # No before image (REPLICA IDENTITY not FULL): its old share is unknown, so
            # the SKU is read back at the batch's last commit, and its figures are exact
            # at batch boundaries only (a read per transaction would not keep up).
            if not self.warned_no_before:
                self.warned_no_before = True
                log.warning(
                    "figures.no_before_image",
                    region=self.region,
                    fix="ALTER TABLE inventory REPLICA IDENTITY FULL in the WMS database",
                )
            self.reload_at_cut.add(after[_INV[1]])
            return
        if before is not None:
            self._balance(before, -1)
        if after is not None:
            self._balance(after, 1)

    def _ledger(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        if after is None or (before is not None and before[_TXN[2]] > after[_TXN[2]]):
            # A max cannot forget: a deleted or back-dated movement reloads its SKU
            # (the WMS never does either: its ledger is append-only).
            if before is None:
                log.warning("figures.ledger_delete_unknown", region=self.region, id=id_)
                self.reload_skus.update(self.sku_keys)  # its SKU is unknown: all of them
            else:
                self.reload_skus.add(before[_TXN[1]])
            if after is None:
                return
        warehouse, sku, occurred_at = (after[i] for i in _TXN)
        key = (warehouse, sku)
        state = self._key(key)
        if state.moved_at is None or occurred_at > state.moved_at:
            state.moved_at = occurred_at
            self.dirty.add(key)

    def _line_share(self, line: Line, sign: int) -> None:
        order = self.orders.get(line.order)
        if order is None or not order[1] or not line.open_qty:
            return
        key = (order[0], line.sku)
        self._key(key).inbound += sign * line.open_qty
        self.dirty.add(key)

    def _inbound_line(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        line_id = id_
        old = self.lines.pop(line_id, None)
        if old is not None:
            self._line_share(old, -1)
            self.order_lines.get(old.order, set()).discard(line_id)
        if after is not None:
            order, sku, expected, received = (after[i] for i in _LINE)
            line = Line(order, sku, max(expected - received, 0))
            self.lines[line_id] = line
            self.order_lines.setdefault(order, set()).add(line_id)
            self._line_share(line, 1)

    def _inbound_order(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        order_id = id_
        lines = [self.lines[i] for i in self.order_lines.get(order_id, ())]
        for line in lines:
            self._line_share(line, -1)
        if after is None:
            self.orders.pop(order_id, None)
        else:
            warehouse, status = (after[i] for i in _ORDER)
            self.orders[order_id] = (warehouse, status in OPEN_INBOUND)
        for line in lines:
            self._line_share(line, 1)

    def _location(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        location_id = id_
        sellable = None if after is None else bool(after[_SELLABLE])
        old = self.sellable.get(location_id)
        if sellable is None:
            self.sellable.pop(location_id, None)
        else:
            self.sellable[location_id] = sellable
        if old is not None and bool(old) != bool(sellable):
            # Turned (un)sellable, or deleted (the WMS keeps no stock where no location
            # is): what its balance rows count in is read again.
            self.reload_locations.add(location_id)

    def _lot(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        lot_id = id_
        old = self.lots.get(lot_id)
        if after is None:
            self.lots.pop(lot_id, None)
            if old is not None:  # rows of a deleted lot count without an expiry
                self.reload_skus.add(old[0])
            return
        sku, expiry = (after[i] for i in _LOT)
        self.lots[lot_id] = (sku, expiry)
        if old is not None and old[1] != expiry:
            self.reload_skus.update({old[0], sku})

    def _sku(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        sku_id = id_
        if after is None:
            self.skus.pop(sku_id, None)
        else:
            self.skus[sku_id] = (after[_SKU[0]], after[_SKU[1]])
        self.dirty.update((w, sku_id) for w in self.sku_keys.get(sku_id, ()))

    def _owner(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        if _set_code(self.owners, id_, after, _CODE_OWNER):
            # A rename moves every key of the owner's SKUs (rare master data: a scan).
            for sku, (owner, _) in self.skus.items():
                if owner == id_:
                    self.dirty.update((w, sku) for w in self.sku_keys.get(sku, ()))

    def _warehouse(self, id_: Any, op: Op, before: Any, after: Any) -> None:
        if _set_code(self.warehouses, id_, after, _CODE_WAREHOUSE):
            self.dirty.update(k for k in self.keys if k[0] == id_)

    # -- loading -------------------------------------------------------------------

    def replace_keys(self, skus: Iterable[int], rows: Iterable[KeyRow]) -> None:
        """The state of every key of `skus`, as read at a cut (a reload): their keys
        now are `rows`' (inbound quantity is not in them: it follows from the lines)."""
        skus = set(skus)
        for sku in skus:
            for warehouse in self.sku_keys.pop(sku, ()):
                key = (warehouse, sku)
                del self.keys[key]
                self.dirty.add(key)
        for row in rows:
            state = self._key(row.key)
            state.sums = list(row.sums)
            state.balances = row.balances
            state.expiry = dict(row.expiry)
            state.moved_at = row.moved_at
            self.dirty.add(row.key)
        for line in self.lines.values():
            if line.sku in skus:
                self._line_share(line, 1)

    def add_line(self, line_id: int, line: Line) -> None:
        self.lines[line_id] = line
        self.order_lines.setdefault(line.order, set()).add(line_id)
        self._line_share(line, 1)

    # -- what to serve -------------------------------------------------------------

    def name_of(self, key: Key) -> Name | None:
        sku = self.skus.get(key[1])
        if sku is None:
            return None
        owner = self.owners.get(sku[0])
        warehouse = self.warehouses.get(key[0])
        if owner is None or warehouse is None:
            return None
        return (owner, warehouse, sku[1])

    def take_changes(self, hold: Collection[int] = ()) -> Iterator[tuple[Name, Figures | None]]:
        """The served keys whose figures changed since the last call (None: delete),
        recorded as served; keys of the SKUs in `hold` stay dirty for a later call. Keys
        with neither balance rows nor inbound quantity nor a movement are forgotten."""
        out: dict[Name, Figures | None] = dict.fromkeys(self.orphans)
        self.orphans.clear()
        dirty = self.dirty
        if hold:
            self.dirty = {k for k in dirty if k[1] in hold}
            dirty = dirty - self.dirty
        else:
            self.dirty = set()
        for key in dirty:
            state = self.keys.get(key)
            name = self.name_of(key) if state is not None and state.exists else None
            old = self.names.pop(key, None)
            if old is not None and old != name:
                out.setdefault(old, None)  # another key may hold the name now: it wins
            if name is not None:
                assert state is not None
                out[name] = state.figures()
                self.names[key] = name
            if state is not None and not state.exists and state.moved_at is None:
                del self.keys[key]
                warehouses = self.sku_keys.get(key[1])
                if warehouses is not None:
                    warehouses.discard(key[0])
                    if not warehouses:
                        del self.sku_keys[key[1]]
        for name, figures in out.items():
            if self.served.get(name) != figures:
                if figures is None:
                    self.served.pop(name, None)
                else:
                    self.served[name] = figures
                yield name, figures


def _set_code(codes: dict[int, str], id_: int, after: Any, column: int) -> bool:
    """Record an owner's or a warehouse's code from its new row (None: deleted); whether
    it changed (then its keys have a new name)."""
    code = None if after is None else after[column]
    if codes.get(id_) == code:
        return False
    if code is None:
        codes.pop(id_, None)
    else:
        codes[id_] = code
    return True


_HANDLERS = {
    "inventory": RegionFigures._inventory,
    "inventory_txn": RegionFigures._ledger,
    "inbound_line": RegionFigures._inbound_line,
    "inbound_order": RegionFigures._inbound_order,
    "location": RegionFigures._location,
    "lot": RegionFigures._lot,
    "sku": RegionFigures._sku,
    "owner": RegionFigures._owner,
    "warehouse": RegionFigures._warehouse,
}


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key's state as read from ClickHouse (without its inbound quantity)."""

    key: Key
    sums: tuple[int, ...]
    balances: int
    expiry: tuple[tuple[date, int], ...]
    moved_at: datetime | None


# -- reading state at a cut ----------------------------------------------------------

_REGION = "region = {region:String}"
_Q = "toInt64(qty_on_hand)"
_AVAIL = "status = 'AVAILABLE' AND sellable"
# Per key and expiry of the rows counted in `available` (NULL for the others), then per
# key: the sums, the row count and the rows per expiry (what `KeyState` holds).
_BALANCES = (
    "SELECT warehouse_id, sku_id, {outer_sums}, sum(rows),"
    " groupArrayIf((assumeNotNull(e), rows), e IS NOT NULL) FROM ("
    " SELECT warehouse_id, sku_id, if({avail} AND qty_on_hand > qty_allocated, expiry, NULL)"
    " AS e, {inner_sums}, count() AS rows"
    " FROM (SELECT b.*, coalesce(l.sellable, false) AS sellable, lt.expiry_date AS expiry"
    " FROM {inventory} AS b LEFT JOIN {location} AS l ON l.id = b.location_id"
    " LEFT JOIN {lot} AS lt ON lt.id = b.lot_id SETTINGS join_use_nulls = 1)"
    " GROUP BY warehouse_id, sku_id, e) GROUP BY warehouse_id, sku_id"
)


def _in_scope(table: str, cols: tuple[str, ...], keys: tuple[str, ...], scope: str) -> str:
    return latest_versions(f"wms_{table}", cols, keys, f"{_REGION} AND {scope}")


def _balances_sql(scope: str) -> str:
    inner = [
        f"sum({_Q}) AS on_hand",
        f"sum(if({_AVAIL}, {_Q} - qty_allocated, 0)) AS available",
        "sum(toInt64(qty_allocated)) AS allocated",
        *(f"sum(if(status = '{s}', {_Q}, 0)) AS s{i}" for i, s in enumerate(STATUS_FIGURES)),
    ]
    names = ["on_hand", "available", "allocated", *(f"s{i}" for i in range(len(STATUS_FIGURES)))]
    balances = f"wms_inventory_by_sku WHERE {_REGION} AND {scope}"
    inventory = latest_versions(
        "wms_inventory_by_sku",
        ("warehouse_id", "location_id", "lot_id", "status", "qty_on_hand", "qty_allocated"),
        ("region", "sku_id", "id"),
        f"{_REGION} AND {scope}",
    )
    return _BALANCES.format(
        avail=_AVAIL,
        inner_sums=", ".join(inner),
        outer_sums=", ".join(f"sum({n})" for n in names),
        inventory=inventory,
        location=_in_scope(
            "location", ("sellable",), ("id",), f"id IN (SELECT location_id FROM {balances})"
        ),
        lot=_in_scope("lot", ("expiry_date",), ("id",), f"id IN (SELECT lot_id FROM {balances})"),
    )


def _moved_sql(scope: str) -> str:
    ledger = latest_versions(
        "wms_inventory_txn_by_sku",
        ("occurred_at", "warehouse_id"),
        ("region", "owner_id", "sku_id", "id"),
        f"{_REGION} AND {scope}",
    )
    return (
        f"SELECT warehouse_id, sku_id, max(occurred_at) FROM {ledger} GROUP BY warehouse_id, sku_id"
    )


#: A SKU set bound with every owner it had (the by-SKU copies are sorted by owner first).
_SOME = "(owner_id, sku_id) IN {keys:Array(Tuple(Int64, Int64))}"
_ALL = "1 = 1"
_MASTERS = {
    "owners": "SELECT id, code FROM " + _in_scope("owner", ("code",), ("id",), _ALL),
    "warehouses": "SELECT id, code FROM " + _in_scope("warehouse", ("code",), ("id",), _ALL),
    "skus": "SELECT id, owner_id, sku_code FROM "
    + _in_scope("sku", ("owner_id", "sku_code"), ("id",), _ALL),
    "sellable": "SELECT id, sellable FROM " + _in_scope("location", ("sellable",), ("id",), _ALL),
    "lots": "SELECT id, sku_id, expiry_date FROM "
    + _in_scope("lot", ("sku_id", "expiry_date"), ("id",), _ALL),
    "orders": "SELECT id, warehouse_id, status FROM "
    + _in_scope("inbound_order", ("warehouse_id", "status"), ("id",), _ALL),
    "lines": "SELECT id, inbound_order_id, sku_id, qty_expected, qty_received FROM "
    + _in_scope(
        "inbound_line", ("inbound_order_id", "sku_id", "qty_expected", "qty_received"),
        ("id",), _ALL,
    ),
}  # fmt: skip
_SKU_OWNERS = (
    "SELECT DISTINCT owner_id, id FROM wms_sku WHERE region = {region:String}"
    " AND id IN {skus:Array(Int64)} AND _commit_lsn <= {wm:UInt64}"
)
_SKUS_AT_LOCATIONS = (
    "SELECT DISTINCT sku_id FROM wms_inventory WHERE region = {region:String}"
    " AND location_id IN {ids:Array(Int64)} AND _commit_lsn <= {wm:UInt64}"
)
#: What `stock_current` serves in a region at a cut (the readers' query, one region).
_SERVED = _served("region = {region:String}", "")
_STOCK_COLUMNS = [
    "region", "owner", "warehouse", "sku", *STOCK_FIGURES, "_commit_lsn", "_seq", "_is_deleted"
]  # fmt: skip
_WATERMARK = "SELECT applied_commit_lsn FROM watermarks WHERE region = {region:String}"


class FigureKeeper:
    """Keeps `stock_current` equal to the figures of every region a writer writes, from
    the state in memory (one per writer)."""

    def __init__(
        self,
        client: Client,
        inserter: ColumnInserter,
        before_read: Callable[[], object] = lambda: None,
    ) -> None:
        self._client = client
        self._inserter = inserter
        self._before_read = before_read  # rows that wait to be written go in first
        self._regions: dict[str, RegionFigures] = {}
        #: per region, the commit LSN its published figures are exact at: a state
        #: dropped after a failure is loaded again there (its rows are in, or waiting)
        self._published: dict[str, int] = {}
        self._staged: list[Version] = []  # written by `publishing`
        self._staging: set[str] = set()  # the regions they come from

    def maintain(
        self,
        region: str,
        transactions: Sequence[Transaction],
        befores: Mapping[tuple[str, int], Sequence[object]] = _NONE,
    ) -> int:
        """After the rows of `transactions` are in, before the watermark: apply them and
        stage a version of every key whose figures a transaction changed, at its commit
        LSN (so `stock_current` is exact at every commit: reconciliation and BI read it
        at any cut). Returns the versions staged; `publishing` writes them."""
        with self._dropped_on_failure(region):
            state = self._regions.get(region)
            if state is None:
                cut = self._published.get(region)
                if cut is None:
                    cut = self._watermark(region)
                state = self._regions[region] = self.load(region, cut)
            changes: list[Version] = []
            for tx in transactions:
                state.apply((tx,), befores)
                if state.reload_locations:  # which SKUs they hold, at this commit
                    self._skus_at_locations(state, tx.commit_lsn)
                if state.reload_skus:  # this transaction's rows are in: read at it
                    self._reload(state, tx.commit_lsn)
                # SKUs without before images keep their served figures until the cut.
                held = state.reload_at_cut
                changes += ((region, tx.commit_lsn, n, f) for n, f in state.take_changes(held))
            if state.reload_at_cut:
                cut = transactions[-1].commit_lsn
                state.reload_skus |= state.reload_at_cut
                state.reload_at_cut.clear()
                self._reload(state, cut)
                changes += ((region, cut, n, f) for n, f in state.take_changes())
            return self._stage(region, changes)

    def rebuild(self, region: str, cut: int) -> int:
        """Load `region` whole at `cut` (assigned to this writer, a snapshot completed, a
        truncate) and stage the corrections of what is served there."""
        with self._dropped_on_failure(region):
            self._regions.pop(region, None)
            state = self._regions[region] = self.load(region, cut)
            return self._stage(region, [(region, cut, n, f) for n, f in state.take_changes()])

    @contextmanager
    def publishing(self) -> Iterator[None]:
        """`maintain` and `rebuild` inside the block stage their versions; after it, all
        of them are written in one insert. On any failure the staged regions' states are
        ahead of what is written: they are dropped, and loaded again at the watermark by
        the retry."""
        try:
            yield
            self._write(self._staged)
            for region in self._staging:
                self._published[region] = self._regions[region].applied[0]
        except BaseException:
            for region in self._staging:
                self._regions.pop(region, None)
            raise
        finally:
            self._staged, self._staging = [], set()

    def _stage(self, region: str, changes: list[Version]) -> int:
        self._staging.add(region)
        self._staged += changes
        return len(changes)

    @contextmanager
    def _dropped_on_failure(self, region: str) -> Iterator[None]:
        """A failure leaves the state ahead of what was written: it is dropped, and
        loaded again at the watermark by the retry."""
        try:
            yield
        except BaseException:
            self._regions.pop(region, None)
            raise

    def load(self, region: str, cut: int) -> RegionFigures:
        """`region`'s state at commit LSN `cut`, and what `stock_current` serves there;
        every key is dirty, so the next publish writes what differs."""
        started = time.monotonic()
        params: dict[str, Any] = {"region": region, "wm": cut}
        state = RegionFigures(region, applied=(cut, 2**64))
        rows = {name: self._rows(sql, params) for name, sql in _MASTERS.items()}
        state.owners = {int(i): str(c) for i, c in rows["owners"]}
        state.warehouses = {int(i): str(c) for i, c in rows["warehouses"]}
        state.skus = {int(i): (int(o), str(c)) for i, o, c in rows["skus"]}
        state.sellable = {int(i): bool(s) for i, s in rows["sellable"]}
        state.lots = {int(i): (int(s), e) for i, s, e in rows["lots"]}
        state.orders = {int(i): (int(w), s in OPEN_INBOUND) for i, w, s in rows["orders"]}
        state.replace_keys((), self._key_rows(params, _ALL))
        for i, order, sku, expected, received in rows["lines"]:
            state.add_line(int(i), Line(int(order), int(sku), max(expected - received, 0)))
        state.served = {
            (str(o), str(w), str(s)): (*f[:-1], _utc(f[-1]))
            for o, w, s, *f in self._rows(_SERVED, {**params, **_cuts({region: cut})})
        }
        for key, key_state in state.keys.items():
            name = state.name_of(key) if key_state.exists else None
            if name is not None:
                state.names[key] = name
        state.orphans = set(state.served) - set(state.names.values())
        state.dirty.update(state.keys)
        log.info(
            "figures.loaded",
            region=region,
            cut=cut,
            keys=len(state.keys),
            served=len(state.served),
            seconds=round(time.monotonic() - started, 3),
        )
        return state

    def _key_rows(self, params: dict[str, Any], scope: str) -> list[KeyRow]:
        moved = {(int(w), int(s)): _utc(t) for w, s, t in self._rows(_moved_sql(scope), params)}
        out = []
        for w, s, *sums, balances, expiry in self._rows(_balances_sql(scope), params):
            key = (int(w), int(s))
            out.append(
                KeyRow(
                    key,
                    tuple(int(x) for x in sums),
                    int(balances),
                    tuple((d, int(n)) for d, n in expiry),
                    moved.pop(key, None),
                )
            )
        out.extend(KeyRow(k, (0,) * _SUMS, 0, (), t) for k, t in moved.items())
        return out

    def _skus_at_locations(self, state: RegionFigures, cut: int) -> None:
        """The SKUs with balance rows at the locations that turned (un)sellable: what
        their rows count in changed, so they are reloaded."""
        ids = sorted(state.reload_locations)
        params = {"region": state.region, "wm": cut, "ids": ids}
        state.reload_skus.update(int(r[0]) for r in self._rows(_SKUS_AT_LOCATIONS, params))
        state.reload_locations.clear()

    def _reload(self, state: RegionFigures, cut: int) -> None:
        """The targeted slower path: the state of the SKUs a change could not give,
        read at `cut` (the batch's rows are in)."""
        skus = sorted(state.reload_skus)
        params: dict[str, Any] = {"region": state.region, "wm": cut, "skus": skus}
        keys = sorted((int(o), int(s)) for o, s in self._rows(_SKU_OWNERS, params))
        state.replace_keys(skus, self._key_rows({**params, "keys": keys}, _SOME) if keys else [])
        state.reload_skus.clear()
        log.info("figures.reloaded", region=state.region, skus=len(skus), cut=cut)

    def _write(self, changes: list[Version]) -> None:
        """Versions of `stock_current`: (region, commit LSN, key, figures or None for a
        delete)."""
        if not changes:
            return
        n = len(changes)
        empty: Figures = (0,) * (len(STOCK_FIGURES) - 2) + (None, None)
        figures = [f if f is not None else empty for *_, f in changes]
        columns: list[list[Any]] = [
            [region for region, *_ in changes],
            *(list(c) for c in zip(*(name for _, _, name, _ in changes), strict=True)),
            *(list(c) for c in zip(*figures, strict=True)),
            [lsn for _, lsn, _, _ in changes],
            [time.time_ns()] * n,
            [int(f is None) for *_, f in changes],
        ]
        self._inserter("stock_current", columns, _STOCK_COLUMNS)

    def _watermark(self, region: str) -> int:
        rows = self._rows(_WATERMARK, {"region": region})
        return int(rows[0][0]) if rows else 0

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        self._before_read()
        try:
            return [tuple(r) for r in self._client.query(sql, parameters=params).result_rows]
        except Exception as exc:  # driver errors have no common base; classify decides
            raise classify(exc, "stock figures state") from exc
