-- Bounded watermark. `_watermark` (001) gets a row per flush per region (a flush every
-- ~100 ms: millions of rows a day) and every read used to take max() over all of them.
-- `_watermark_max` keeps the same answer in one row per region once merged: the
-- aggregates are max (applied LSN, heartbeat, updated_at) and argMax by LSN (source
-- commit time), all idempotent and order-free, so replays that write older watermarks
-- again still lose to the highest one written (max wins, as in 001), before and after
-- merges. The writer keeps inserting into `_watermark`; the materialized view folds every
-- insert into `_watermark_max` inside the same INSERT, so a watermark is readable here only
-- after the batch's rows (written before it) are.

-- Created from what `_watermark` holds now (IF NOT EXISTS: populated once).
CREATE TABLE IF NOT EXISTS _watermark_max ${ON_CLUSTER}
(
    `region` LowCardinality(String),
    `applied_commit_lsn` SimpleAggregateFunction(max, UInt64),
    `source_commit_ts` AggregateFunction(argMax, DateTime64(3, 'UTC'), UInt64),
    `heartbeat_ts` SimpleAggregateFunction(max, Nullable(DateTime64(3, 'UTC'))),
    `updated_at` SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = ${REPLICATED}AggregatingMergeTree
ORDER BY region
AS SELECT region, max(applied_commit_lsn), argMaxState(source_commit_ts, applied_commit_lsn),
    max(heartbeat_ts), max(updated_at)
FROM _watermark
GROUP BY region;

-- A watermark written between the statement above and this one only reaches
-- `_watermark_max` with the next flush or heartbeat: the cut lags, it never runs ahead.
CREATE MATERIALIZED VIEW IF NOT EXISTS _watermark_max_mv ${ON_CLUSTER} TO _watermark_max AS
SELECT w.region AS region, max(w.applied_commit_lsn) AS applied_commit_lsn,
    argMaxState(w.source_commit_ts, w.applied_commit_lsn) AS source_commit_ts,
    max(w.heartbeat_ts) AS heartbeat_ts, max(w.updated_at) AS updated_at
FROM _watermark AS w
GROUP BY w.region;

-- The visibility cut per region (the generated cur_* views read it): max wins.
CREATE OR REPLACE VIEW _watermark_lsn ${ON_CLUSTER} AS
SELECT region, CAST(max(applied_commit_lsn), 'UInt64') AS lsn
FROM _watermark_max
GROUP BY region;

-- Freshness per region: the highest watermark, its source commit time, latest heartbeat.
CREATE OR REPLACE VIEW watermarks ${ON_CLUSTER} AS
SELECT m.region AS region, CAST(max(m.applied_commit_lsn), 'UInt64') AS applied_commit_lsn,
    argMaxMerge(m.source_commit_ts) AS source_commit_ts, max(m.heartbeat_ts) AS heartbeat_ts,
    CAST(max(m.updated_at), 'DateTime64(6, \'UTC\')') AS updated_at
FROM _watermark_max AS m
GROUP BY m.region;

-- The per-flush log is now history only (nothing reads it for visibility): keep a day.
ALTER TABLE _watermark ${ON_CLUSTER} MODIFY TTL toDateTime(updated_at) + INTERVAL 1 DAY;
