-- Figures ahead of rows (issue 15). A flush writes the stock figures (`stock_current`)
-- at once and the WMS rows up to `rows_max_ms` later, in fewer, larger inserts: every
-- insert into a table costs a part whatever its size, and the rows were most of a
-- flush's cost. So a region has two watermarks:
-- * `watermarks` (005): everything applied, rows and figures (drill-downs, BI, resume);
-- * `figure_watermarks` (here): how far `stock_current` is exact, never behind the first.
-- The writer inserts a flush's figure watermarks straight into `_figure_watermark_max`,
-- as 016 does for the rows' (same aggregates: the highest LSN wins with its commit time,
-- the latest heartbeat wins, so a replay's older watermarks change nothing).
CREATE TABLE IF NOT EXISTS _figure_watermark_max ${ON_CLUSTER}
(
    `region` LowCardinality(String),
    `applied_commit_lsn` SimpleAggregateFunction(max, UInt64),
    `source_commit_ts` AggregateFunction(argMax, DateTime64(3, 'UTC'), UInt64),
    `heartbeat_ts` SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    `updated_at` SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = ${REPLICATED}AggregatingMergeTree
ORDER BY region;

-- Per region: the figures' cut, which the rows' watermark also moves (rows are written
-- after their figures, so whatever `watermarks` says applied, the figures have).
CREATE OR REPLACE VIEW figure_watermarks ${ON_CLUSTER} AS
SELECT m.region AS region, CAST(max(m.applied_commit_lsn), 'UInt64') AS applied_commit_lsn,
    argMaxMerge(m.source_commit_ts) AS source_commit_ts, max(m.heartbeat_ts) AS heartbeat_ts,
    CAST(max(m.updated_at), 'DateTime64(6, \'UTC\')') AS updated_at
FROM (SELECT * FROM _watermark_max UNION ALL SELECT * FROM _figure_watermark_max) AS m
GROUP BY m.region;
