-- The figure watermarks (017) kept in memory. Every flush wrote one into a MergeTree
-- table: a part and its merges each time, 4-6 ms of CPU a flush more than this table
-- costs (an isolated writer, three regions a flush). Nothing needs them to last:
-- `stock_current` keeps a version per commit, so a figure watermark that is lost (a
-- restart, another replica of a cluster) leaves the figures read at the rows' watermark
-- (`watermarks`, durable), which they always cover: answers stay consistent, and are
-- ahead again with the next flush. The highest LSN still wins, so which rows are kept
-- does not matter as long as the newest are: the oldest go beyond `max_rows_to_keep`.
DROP TABLE IF EXISTS _figure_watermark_max ${ON_CLUSTER};

-- The shape of `_watermark_max` (005), which `figure_watermarks` (017) reads beside it.
CREATE TABLE IF NOT EXISTS _figure_watermark_max ${ON_CLUSTER} AS _watermark_max
ENGINE = Memory
SETTINGS max_rows_to_keep = 10000;
