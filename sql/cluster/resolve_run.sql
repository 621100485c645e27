-- A run named by its run_id, a unique run_id prefix, or MAP@vN; `stale` when it was made on an
-- earlier version of its map (see cluster_run_list in cluster/clusters.sql).
SELECT run_id, map, name, k, stale
FROM cluster_run_list
WHERE run_id = $ref OR name = $ref OR (length($ref) >= 6 AND starts_with(run_id, $ref))
ORDER BY created_at;
