-- History-free inputs of the serving figures (read_model.serving). Recomputing a SKU's
-- stock figures from `wms_inventory_by_sku` and `wms_inventory_txn_by_sku` reads every
-- version of its balance rows and every ledger row it ever had: a cost per batch that
-- grows with the projection's age. These two tables keep what a recomputation at the
-- newest commit needs, filled by materialized views inside the same INSERT as the
-- versioned tables (so they hold exactly the rows written):
-- * `_inventory_latest`: balance rows by SKU whose old versions merges drop (the
--   version is (commit LSN, event LSN) packed in one UInt128); readers still take the
--   latest per key, as parts merge in their own time.
-- * `_ledger_last`: the latest movement time per (owner, SKU, warehouse), which is
--   last_movement_at; exact because ledger rows are never changed (wms/OPERATIONS.md),
--   and the writer repairs it when a ledger row is deleted or the ledger truncated.
-- Both hold the newest state only, not the state at older cuts: the writer uses them for
-- a batch only when no later commit is in the projection yet (not during a replay).

CREATE TABLE IF NOT EXISTS _inventory_latest ${ON_CLUSTER}
(
    `region` LowCardinality(String),
    `owner_id` Int64,
    `sku_id` Int64,
    `id` Int64,
    `warehouse_id` Int64,
    `location_id` Int64,
    `lot_id` Nullable(Int64),
    `status` String,
    `qty_on_hand` Int32,
    `qty_allocated` Int32,
    `_lsn` UInt64,
    `_commit_lsn` UInt64,
    `_is_deleted` UInt8,
    `_version` UInt128
)
ENGINE = ${REPLICATED}ReplacingMergeTree(_version)
ORDER BY (region, owner_id, sku_id, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS _inventory_latest_mv ${ON_CLUSTER} TO _inventory_latest AS
SELECT region, owner_id, sku_id, id, warehouse_id, location_id, lot_id, status, qty_on_hand,
    qty_allocated, _lsn, _commit_lsn, _is_deleted,
    bitShiftLeft(toUInt128(_commit_lsn), 64) + _lsn AS _version
FROM wms_inventory;

CREATE TABLE IF NOT EXISTS _ledger_last ${ON_CLUSTER}
(
    `region` LowCardinality(String),
    `owner_id` Int64,
    `sku_id` Int64,
    `warehouse_id` Int64,
    `occurred_at` SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = ${REPLICATED}AggregatingMergeTree
ORDER BY (region, owner_id, sku_id, warehouse_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS _ledger_last_mv ${ON_CLUSTER} TO _ledger_last AS
SELECT region, owner_id, sku_id, warehouse_id, max(occurred_at) AS occurred_at
FROM wms_inventory_txn
WHERE _is_deleted = 0
GROUP BY region, owner_id, sku_id, warehouse_id;

-- What was projected before this migration (after the views, so no insert is missed; a
-- row both copied here and by a view is harmless: latest-per-key and max).
INSERT INTO _inventory_latest
SELECT region, owner_id, sku_id, id, warehouse_id, location_id, lot_id, status, qty_on_hand,
    qty_allocated, _lsn, _commit_lsn, _is_deleted,
    bitShiftLeft(toUInt128(_commit_lsn), 64) + _lsn
FROM wms_inventory;

INSERT INTO _ledger_last
SELECT region, owner_id, sku_id, warehouse_id, max(occurred_at)
FROM wms_inventory_txn
WHERE _is_deleted = 0
    AND (region, id) NOT IN (SELECT region, id FROM wms_inventory_txn WHERE _is_deleted = 1)
GROUP BY region, owner_id, sku_id, warehouse_id;
