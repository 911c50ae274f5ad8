-- The stock figures are kept in memory by the projection writer (read_model/figures.py)
-- instead of recomputed from ClickHouse per batch: the inputs that recomputation read
-- (009's history-free copies and the marker of regions built whole) have no reader left,
-- and their materialized views cost every insert into wms_inventory and the ledger.
DROP VIEW IF EXISTS _inventory_latest_mv ${ON_CLUSTER};
DROP TABLE IF EXISTS _inventory_latest ${ON_CLUSTER};
DROP VIEW IF EXISTS _ledger_last_mv ${ON_CLUSTER};
DROP TABLE IF EXISTS _ledger_last ${ON_CLUSTER};
DROP TABLE IF EXISTS _stock_current_built ${ON_CLUSTER};
