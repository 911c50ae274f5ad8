-- Single-key stock reads as key-value lookups. A read of one key from `stock_current` (a
-- MergeTree) costs 10-15 ms in embedded chDB whatever it reads, the engine's floor for
-- opening parts; a RocksDB get costs about 3 ms. `stock_point` keeps the newest version of
-- each key, filled by a materialized view inside the same INSERT as `stock_current`:
-- * a block may hold several versions of a key (a rebuild and a batch): the newest wins;
-- * a replay writes figures at an older cut into `stock_current`: the join keeps the
--   newer version already here, so the point table never goes back in time.
-- It holds the newest version only, which may be past a region's watermark (a batch
-- written, its watermark not yet): readers take it only when its commit LSN is at or
-- below their cut and otherwise read `stock_current` at the cut (read_model.queries).
-- EmbeddedRocksDB is node-local: on a replicated cluster the view fills only the node an
-- insert reached, so readers use it only without a cluster.

CREATE TABLE IF NOT EXISTS stock_point ${ON_CLUSTER}
(
    `owner` String,
    `warehouse` String,
    `sku` String,
    `region` LowCardinality(String),
    `on_hand` Int64,
    `available` Int64,
    `allocated` Int64,
    `pending_putaway` Int64,
    `qc_hold` Int64,
    `frozen` Int64,
    `damaged` Int64,
    `returned` Int64,
    `expired` Int64,
    `inbound_expected` Int64,
    `earliest_expiry` Nullable(Date32),
    `last_movement_at` Nullable(DateTime64(6, 'UTC')),
    `_commit_lsn` UInt64,
    `_seq` UInt64,
    `_is_deleted` UInt8
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY (owner, warehouse, sku);

CREATE MATERIALIZED VIEW IF NOT EXISTS stock_point_mv ${ON_CLUSTER} TO stock_point AS
SELECT n.owner AS owner, n.warehouse AS warehouse, n.sku AS sku, n.region AS region,
    n.on_hand AS on_hand, n.available AS available, n.allocated AS allocated,
    n.pending_putaway AS pending_putaway, n.qc_hold AS qc_hold, n.frozen AS frozen,
    n.damaged AS damaged, n.returned AS returned, n.expired AS expired,
    n.inbound_expected AS inbound_expected, n.earliest_expiry AS earliest_expiry,
    n.last_movement_at AS last_movement_at, n._commit_lsn AS _commit_lsn, n._seq AS _seq,
    n._is_deleted AS _is_deleted
FROM
(
    SELECT * FROM stock_current
    ORDER BY _commit_lsn DESC, _seq DESC
    LIMIT 1 BY owner, warehouse, sku
) AS n
LEFT JOIN stock_point AS o ON o.owner = n.owner AND o.warehouse = n.warehouse AND o.sku = n.sku
WHERE (n._commit_lsn, n._seq) >= (o._commit_lsn, o._seq);

-- What was served before this migration (migrate runs before the projector starts).
INSERT INTO stock_point
SELECT owner, warehouse, sku, region, on_hand, available, allocated, pending_putaway,
    qc_hold, frozen, damaged, returned, expired, inbound_expected, earliest_expiry,
    last_movement_at, _commit_lsn, _seq, _is_deleted
FROM stock_current
ORDER BY _commit_lsn DESC, _seq DESC
LIMIT 1 BY owner, warehouse, sku;
