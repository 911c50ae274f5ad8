-- Commit time of every applied WMS transaction (issue 7: stock as of a past moment).
-- Row versions carry their commit LSN only; this maps each commit LSN of a region to the
-- source commit time, so "the state at the end of day D" is exactly the latest version
-- of every key whose commit LSN is at or below the last commit before midnight.
-- Written by the projection writer with each batch, before the batch's watermark; a
-- replayed batch writes the same rows again (collapsed by the sorting key).
CREATE TABLE IF NOT EXISTS _commit_log ${ON_CLUSTER}
(
    `region` LowCardinality(String),
    `commit_lsn` UInt64,
    `commit_ts` DateTime64(3, 'UTC')
)
ENGINE = ${REPLICATED}ReplacingMergeTree
ORDER BY (region, commit_lsn);
