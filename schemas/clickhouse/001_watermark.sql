-- Per-region watermark (decision 5): everything with a commit LSN up to
-- applied_commit_lsn is in the projection. Written by the projection writer after the
-- batch's rows, so it is the visibility cut of every serving view (decision 4).
-- One row per applied LSN; heartbeats at the same LSN replace it (version updated_at).
CREATE TABLE IF NOT EXISTS _watermark ${ON_CLUSTER}
(
    `region` LowCardinality(String),
    `applied_commit_lsn` UInt64,
    `source_commit_ts` DateTime64(3, 'UTC'),
    `heartbeat_ts` Nullable(DateTime64(3, 'UTC')),
    `updated_at` DateTime64(6, 'UTC')
)
ENGINE = ${REPLICATED}ReplacingMergeTree(updated_at)
ORDER BY (region, applied_commit_lsn);

-- The visibility cut per region. max() not latest: a replay after a crash writes older
-- watermarks again, but everything up to the highest one written is already there.
CREATE VIEW IF NOT EXISTS _watermark_lsn ${ON_CLUSTER} AS
SELECT region, max(applied_commit_lsn) AS lsn
FROM _watermark
GROUP BY region;

-- Freshness per region: the watermark's LSN, source commit time and latest heartbeat.
CREATE VIEW IF NOT EXISTS watermarks ${ON_CLUSTER} AS
SELECT region, v.1 AS applied_commit_lsn, v.2 AS source_commit_ts, hb AS heartbeat_ts,
    up AS updated_at
FROM
(
    SELECT
        region,
        argMax(tuple(applied_commit_lsn, source_commit_ts), (applied_commit_lsn, updated_at)) AS v,
        max(heartbeat_ts) AS hb,
        max(updated_at) AS up
    FROM _watermark
    GROUP BY region
);
