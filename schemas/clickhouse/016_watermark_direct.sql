-- The writer inserts each flush's watermarks into `_watermark_max` itself, as aggregate
-- states (read_model.writer): 005's view made every flush write two parts, `_watermark`
-- then `_watermark_max`, a tenth of an idle demo's CPU. The same rule holds: the highest
-- LSN wins with its commit time, the latest heartbeat wins, so a replay's older
-- watermarks change nothing. `_watermark` keeps what was written until now (its TTL
-- empties it within a day).
DROP VIEW IF EXISTS _watermark_max_mv ${ON_CLUSTER};
