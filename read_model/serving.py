"""The serving table `stock_current`: every (owner, warehouse, sku)'s stock figures
(wms/OPERATIONS.md), kept by the projection writer so that a stock read is one short
range read instead of an aggregate over balance rows, lots, locations, inbound lines and
the ledger (bench/: single-SKU reads on 10M balance rows).

After a batch's rows are in and before its watermark, the writer recomputes the figures
of the SKUs the batch touched, as of the batch's last commit LSN, from the `wms_*` tables
(the same SQL as the BI relations and the oracle's definitions), and writes a version of
every key whose figures changed, and a delete version of every key that vanished (also
the key of a name a SKU lost: a key holds the SKU's owner and code, both can change). The
version is the batch's commit LSN, so readers cut it exactly like the `wms_*` rows
(decision 4). Recomputing is idempotent: a replayed batch finds nothing changed.

A streamed batch reads balance rows from `_inventory_latest` and last movements from
`_ledger_last` (migration 009): the newest state only, so the cost of a batch does not
grow with the projection's history. That state is the batch's own cut unless a later
commit is already projected (a replay after a crash or a rebalance: `_commit_log` is
written before the rows); then the batch reads the versioned tables at its cut instead,
as a rebuild always does. Deleted ledger rows are taken out of `_ledger_last` (a max)
by recomputing the SKUs concerned before their figures.

A whole region is rebuilt when its snapshot completes, after a truncate, when an owner
or a warehouse changes (rare master data), and the first time a writer meets a region
that was never built (`_stock_current_built`: upgrading a running projection).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from read_model.client import ColumnInserter
from read_model.ddl import STOCK_FIGURES, stock_figures_sql
from read_model.errors import classify
from read_model.queries import latest_versions

#: Where a changed row's SKU id is, per table whose rows feed a SKU's figures directly.
_SKU_COLUMN = {
    "inventory": "sku_id",
    "inventory_txn": "sku_id",
    "inbound_line": "sku_id",
    "lot": "sku_id",
    "sku": "id",
}
#: Master data whose change may move every key of a region (codes): rebuild the region.
_REBUILD_ON = frozenset({"owner", "warehouse"})

_KEY = ("owner", "warehouse", "sku")
_COLUMNS = ("region", *_KEY, *STOCK_FIGURES)


@dataclass(slots=True)
class Touched:
    """What one batch changed that stock figures depend on."""

    skus: set[int] = field(default_factory=set)
    inbound_orders: set[int] = field(default_factory=set)
    locations: set[int] = field(default_factory=set)
    #: SKUs of deleted ledger rows: `_ledger_last` (a max) has to be recomputed for them
    ledger_deleted: set[int] = field(default_factory=set)
    rebuild: bool = False

    def note(self, table: str, names: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
        """Record the rows of a column-oriented insert into `wms_<table>`."""
        if table in _SKU_COLUMN:
            skus = columns[names.index(_SKU_COLUMN[table])]
            self.skus.update(skus)
            if table == "inventory_txn":
                deleted = columns[names.index("_is_deleted")]
                self.ledger_deleted.update(s for s, d in zip(skus, deleted, strict=True) if d)
        elif table == "inbound_order":
            self.inbound_orders.update(columns[names.index("id")])
        elif table == "location":
            self.locations.update(columns[names.index("id")])
        elif table in _REBUILD_ON:
            self.rebuild = True

    def __bool__(self) -> bool:
        return bool(self.skus or self.inbound_orders or self.locations or self.rebuild)


def _scoped(scope: str, newest: bool = False) -> Callable[[str], str]:
    """`src(table)` for `stock_figures_sql`: each table's latest versions at the cut
    `{wm}`, restricted to one region and, by `scope` (a condition on the SKU ids of the
    by-SKU copies), to the rows the figures of those SKUs read. `newest`: balance rows
    and last movements from the history-free tables (exact when nothing later than the
    cut is projected)."""
    region = "region = {region:String}"
    inventory = "_inventory_latest" if newest else "wms_inventory_by_sku"
    balances = f"{inventory} WHERE {region} AND {scope}"
    lines = f"wms_inbound_line_by_sku WHERE {region} AND {scope}"
    keyed = ("region", "id")
    ledger = (
        "(SELECT region, sku_id, warehouse_id, max(occurred_at) AS occurred_at FROM"
        f" _ledger_last WHERE {region} AND {scope} GROUP BY region, sku_id, warehouse_id)"
        if newest
        else latest_versions(
            "wms_inventory_txn_by_sku", ("occurred_at", "warehouse_id"),
            ("region", "owner_id", "sku_id", "id"), f"{region} AND {scope}",
        )
    )  # fmt: skip
    # Balance rows and SKUs are taken latest per id, whatever owner each version has: a
    # row's versions may be under several owners (a SKU moved to another seller), all of
    # them in `scope`, and only the latest one counts.
    tables = {
        "inventory": latest_versions(
            inventory,
            ("warehouse_id", "location_id", "lot_id", "status", "qty_on_hand", "qty_allocated"),
            ("region", "sku_id", "id"),
            f"{region} AND {scope}",
        ),
        "location": latest_versions(
            "wms_location", ("sellable",), keyed,
            f"{region} AND id IN (SELECT location_id FROM {balances})",
        ),
        "lot": latest_versions(
            "wms_lot", ("expiry_date",), keyed,
            f"{region} AND id IN (SELECT lot_id FROM {balances})",
        ),
        "inbound_line": latest_versions(
            "wms_inbound_line_by_sku", ("inbound_order_id", "qty_expected", "qty_received"),
            ("region", "sku_id", "id"), f"{region} AND {scope}",
        ),
        "inbound_order": latest_versions(
            "wms_inbound_order", ("warehouse_id", "status"), keyed,
            f"{region} AND id IN (SELECT inbound_order_id FROM {lines})",
        ),
        "inventory_txn": ledger,
        "sku": latest_versions(
            "wms_sku_by_code", ("owner_id", "sku_code"), ("region", "id"),
            f"{region} AND {scope.replace('sku_id', 'id')}",
        ),
        "owner": latest_versions("wms_owner", ("code",), keyed, region),
        "warehouse": latest_versions("wms_warehouse", ("code",), keyed, region),
    }  # fmt: skip
    return tables.__getitem__


# The by-SKU copies are sorted by (region, owner_id, sku_id, ...): a SKU set is bound with
# its owners so the primary key narrows every read to the SKUs' ranges (a subquery here
# would be run again by each table that needs it, and plans worse). A SKU is bound with
# every owner it ever had: the key's owner is the SKU's (wms/OPERATIONS.md), but its older
# versions, and balance rows written before it moved, sit under the owners of their time.
_SOME = "(owner_id, sku_id) IN {keys:Array(Tuple(Int64, Int64))}"
_SOME_LINES = "sku_id IN {skus:Array(Int64)}"
#: Per SKU at the cut: every owner and every (owner, code) name it had, and its name now
#: (the latest version; `_is_deleted` set when the SKU is gone).
_NAMES = (
    "SELECT id, groupUniqArray(owner_id), groupUniqArray((owner_id, sku_code)),"
    " argMax((owner_id, sku_code, _is_deleted), (_commit_lsn, _lsn)) FROM wms_sku"
    " WHERE region = {region:String} AND _commit_lsn <= {wm:UInt64}"
)
_NAMES_OF_SKUS = _NAMES + " AND id IN {skus:Array(Int64)} GROUP BY id"
#: SKUs recomputed per query by a rebuild: bounds its memory (a region of 10M balance
#: rows at once took GBs) without many round trips.
REBUILD_CHUNK = 5_000
_NAMES_OF_REGION = _NAMES + " GROUP BY id ORDER BY id"
#: Which of the (owner, code) names `{names}` a SKU has at the cut (codes are unique
#: per owner at every commit, so at most one).
_NAMES_HELD = (
    "SELECT owner_id, sku_code FROM "
    + latest_versions(
        "wms_sku", ("owner_id", "sku_code"), ("id",),
        "region = {region:String} AND id IN (SELECT id FROM wms_sku_by_code"
        " WHERE region = {region:String}"
        " AND (owner_id, sku_code) IN {names:Array(Tuple(Int64, String))})",
    )
    + " WHERE (owner_id, sku_code) IN {names:Array(Tuple(Int64, String))}"
)  # fmt: skip


def _figures_sql(scope: str, line_scope: str, newest: bool = False) -> str:
    src = _scoped(scope, newest)
    lines = _scoped(line_scope)
    return stock_figures_sql(
        lambda t: lines(t) if t in ("inbound_line", "inbound_order") else src(t)
    )


_FIGURES_SOME = _figures_sql(_SOME, _SOME_LINES)
_FIGURES_NEWEST = _figures_sql(_SOME, _SOME_LINES, newest=True)
#: Whether a commit later than the cut is projected (a replay): `_commit_log` is written
#: before a batch's rows, and its sorting key makes this one granule.
_LATER_COMMIT = (
    "SELECT count() FROM (SELECT 1 FROM _commit_log WHERE region = {region:String}"
    " AND commit_lsn > {wm:UInt64} LIMIT 1)"
)
_ALL_LSNS = "18446744073709551615"
_LEDGER_DELETES = (
    "SELECT count() FROM (SELECT 1 FROM wms_inventory_txn WHERE region = {region:String}"
    " AND _is_deleted = 1 LIMIT 1)"
)

_CURRENT = (
    "SELECT region, owner, warehouse, sku, "
    + ", ".join(f"v.{i}" for i in range(1, len(STOCK_FIGURES) + 1))
    + " FROM (SELECT region, owner, warehouse, sku, argMax(tuple("
    + ", ".join((*STOCK_FIGURES, "_is_deleted"))
    + "), (_commit_lsn, _seq)) AS v FROM stock_current WHERE {where}"
    " AND _commit_lsn <= {{wm:UInt64}} GROUP BY region, owner, warehouse, sku)"
    f" WHERE v.{len(STOCK_FIGURES) + 1} = 0"
)
#: The served keys of the (owner id, code) names `{names}`, by the owners' codes at the
#: cut (an owner's code changing rebuilds the region: no served key has an older one).
_KEYS_OF_NAMES = (
    "(owner, sku) IN (SELECT o.code, n.code FROM (SELECT tupleElement(name, 1) AS owner_id,"
    " tupleElement(name, 2) AS code FROM (SELECT arrayJoin("
    "{names:Array(Tuple(Int64, String))}) AS name)) AS n INNER JOIN "
    + latest_versions("wms_owner", ("code",), ("id",), "region = {region:String}")
    + " AS o ON o.id = n.owner_id)"
)
_CURRENT_SOME = _CURRENT.format(where=_KEYS_OF_NAMES + " AND region = {region:String}")
_CURRENT_ALL = _CURRENT.format(where="region = {region:String}")

# SKUs whose figures an inbound order or a location change can move (no copy is keyed
# by these: a scan, but such changes are rare next to balance changes).
_SKUS_OF_ORDERS = (
    "SELECT DISTINCT sku_id FROM wms_inbound_line WHERE region = {region:String}"
    " AND inbound_order_id IN {ids:Array(Int64)} AND _commit_lsn <= {wm:UInt64}"
)
_SKUS_AT_LOCATIONS = (
    "SELECT DISTINCT sku_id FROM wms_inventory WHERE region = {region:String}"
    " AND location_id IN {ids:Array(Int64)} AND _commit_lsn <= {wm:UInt64}"
)


@dataclass(frozen=True, slots=True)
class _Names:
    """A SKU's names at a cut (a row of `_NAMES`): a served key is a name's owner code
    and code, so a SKU's key moves when its code or its owner changes."""

    sku: int
    owners: tuple[int, ...]
    names: frozenset[tuple[int, str]]
    now: tuple[int, str] | None  # None: the SKU is deleted

    @classmethod
    def of(cls, row: Sequence[Any]) -> _Names:
        sku, owners, names, (owner, code, deleted) = row
        return cls(
            int(sku),
            tuple(int(o) for o in owners),
            frozenset((int(o), str(c)) for o, c in names),
            None if deleted else (int(owner), str(code)),
        )


def _bound(skus: Sequence[_Names]) -> dict[str, Any]:
    """Parameters binding the figures to `skus`' ranges, under every owner they had."""
    return {
        "skus": [s.sku for s in skus],
        "keys": sorted({(o, s.sku) for s in skus for o in s.owners}),
    }


@dataclass(frozen=True, slots=True)
class Refresh:
    """What one recomputation wrote."""

    keys_read: int
    versions_written: int
    deleted: int

    def __add__(self, other: Refresh) -> Refresh:
        return Refresh(
            self.keys_read + other.keys_read,
            self.versions_written + other.versions_written,
            self.deleted + other.deleted,
        )


class StockServing:
    """Keeps `stock_current` equal to the figures of the `wms_*` tables at every
    watermark; one per writer."""

    def __init__(self, client: Client, inserter: ColumnInserter | None = None) -> None:
        self._client = client
        self._inserter = inserter or ColumnInserter(client)
        self._built: set[str] = set()

    def maintain(self, region: str, touched: Touched, cut: int, rebuild: bool = False) -> Refresh:
        """After a batch's rows (up to commit LSN `cut`) are in, before its watermark."""
        if rebuild or touched.rebuild or not self.is_built(region):
            return self.rebuild(region, cut)
        skus = set(touched.skus)
        params = {"region": region, "wm": cut}
        if touched.inbound_orders:
            ids = sorted(touched.inbound_orders)
            skus.update(r[0] for r in self._rows(_SKUS_OF_ORDERS, {**params, "ids": ids}))
        if touched.locations:
            ids = sorted(touched.locations)
            skus.update(r[0] for r in self._rows(_SKUS_AT_LOCATIONS, {**params, "ids": ids}))
        if touched.ledger_deleted:
            self._repair_ledger(region, sorted(touched.ledger_deleted))
        if not skus:
            return Refresh(0, 0, 0)
        named = self._rows(_NAMES_OF_SKUS, {**params, "skus": sorted(skus)})
        if not named:  # rows of SKUs the projection never had: no key to serve
            return Refresh(0, 0, 0)
        names = [_Names.of(r) for r in named]
        now = {n.now for n in names if n.now is not None}
        # Names the SKUs had and lost (a new code or owner, a delete): their keys are
        # compared too, so they get a delete version, unless another SKU has the name
        # now (codes are reused), whose key is not these SKUs' to touch.
        lost = {name for n in names for name in n.names} - now
        if lost:
            held = self._rows(_NAMES_HELD, {**params, "names": sorted(lost)})
            lost -= {(int(o), str(c)) for o, c in held}
        replay = self._rows(_LATER_COMMIT, params)[0][0] > 0
        figures = _FIGURES_SOME if replay else _FIGURES_NEWEST
        params.update(_bound(names), names=sorted(now | lost))
        return self._refresh(figures, _CURRENT_SOME, params, cut)

    def rebuild(self, region: str, cut: int) -> Refresh:
        """Recompute every key of `region` as of `cut` and record the region as built."""
        region_params: dict[str, Any] = {"region": region, "wm": cut}
        skus = [_Names.of(r) for r in self._rows(_NAMES_OF_REGION, region_params)]
        seen: set[tuple[Any, ...]] = set()
        done = Refresh(0, 0, 0)
        for i in range(0, len(skus), REBUILD_CHUNK):
            chunk = skus[i : i + REBUILD_CHUNK]
            # Each chunk compares the keys of its SKUs' names now; keys of lost names
            # are found by the sweep below (another chunk's SKU may have taken one).
            now = sorted(n.now for n in chunk if n.now is not None)
            params = {**region_params, **_bound(chunk), "names": now}
            done += self._refresh(_FIGURES_SOME, _CURRENT_SOME, params, cut, seen)
        if self._rows(_LEDGER_DELETES, region_params)[0][0]:
            self._repair_ledger(region, None)  # a truncate, or deletes by the sweep
        # keys of SKUs no longer in the WMS at all
        gone = [r for r in self._rows(_CURRENT_ALL, region_params) if tuple(r[1:4]) not in seen]
        self._write([], gone, cut)
        done += Refresh(0, len(gone), len(gone))
        self._inserter(
            "_stock_current_built",
            [[region], [cut], [datetime.now(UTC)]],
            ["region", "built_lsn", "built_at"],
        )
        self._built.add(region)
        return done

    def _repair_ledger(self, region: str, skus: list[int] | None) -> None:
        """Recompute `_ledger_last` of `skus` (None: the whole region) after ledger rows
        were deleted: a max cannot forget, so their rows are dropped and computed again
        from the ledger's latest versions (all of them: like the view, the table holds
        every ledger row projected)."""
        where = "region = {region:String}"
        params: dict[str, Any] = {"region": region}
        if skus is not None:
            where += " AND sku_id IN {skus:Array(Int64)}"
            params["skus"] = skus
        latest = latest_versions(
            "wms_inventory_txn", ("owner_id", "sku_id", "warehouse_id", "occurred_at"),
            ("region", "id"), where, _ALL_LSNS,
        )  # fmt: skip
        for sql in (
            f"DELETE FROM _ledger_last WHERE {where}",
            "INSERT INTO _ledger_last SELECT region, owner_id, sku_id, warehouse_id,"
            f" max(occurred_at) FROM {latest} GROUP BY region, owner_id, sku_id, warehouse_id",
        ):
            try:
                self._client.command(sql, parameters=params)
            except Exception as exc:  # driver errors have no common base; classify decides
                raise classify(exc, "repairing _ledger_last") from exc

    def is_built(self, region: str) -> bool:
        """Whether `region`'s keys were ever computed whole (then versions follow it)."""
        if region not in self._built:
            rows = self._rows(
                "SELECT count() FROM _stock_current_built WHERE region = {region:String}",
                {"region": region},
            )
            if rows[0][0]:
                self._built.add(region)
        return region in self._built

    def _refresh(
        self,
        figures: str,
        current: str,
        params: dict[str, Any],
        cut: int,
        seen: set[tuple[Any, ...]] | None = None,
    ) -> Refresh:
        """Recompute the keys `figures` selects, compare with their `current` versions,
        write what changed; adds the keys that exist to `seen`."""
        new = {tuple(r[1:4]): r for r in self._rows(figures, params)}
        old = {tuple(r[1:4]): r for r in self._rows(current, params)}
        changed = [r for k, r in new.items() if old.get(k) != tuple(r)]
        gone = [r for k, r in old.items() if k not in new]
        self._write(changed, gone, cut)
        if seen is not None:
            seen.update(new)
        return Refresh(len(new), len(changed) + len(gone), len(gone))

    def _write(self, changed: list[Any], gone: list[Any], cut: int) -> None:
        """Versions at `cut`: `changed` rows as they are, `gone` ones as deletes."""
        if not changed and not gone:
            return
        seq = time.time_ns()
        rows = [(*r, 0) for r in changed] + [(*r, 1) for r in gone]
        columns = [list(c) for c in zip(*rows, strict=True)]
        n = len(rows)
        self._inserter(
            "stock_current",
            [*columns[:-1], [cut] * n, [seq] * n, columns[-1]],
            [*_COLUMNS, "_commit_lsn", "_seq", "_is_deleted"],
        )

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in self._client.query(sql, parameters=params).result_rows]
        except Exception as exc:  # driver errors have no common base; classify decides
            raise classify(exc, "stock figures refresh") from exc
