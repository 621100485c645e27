-- The run a new run of a map is numbered after: the map's latest committed run with the same
-- k, else its latest committed run of any k.
SELECT run_id, name, k
FROM cluster_runs
WHERE map = $map
ORDER BY k = $k DESC, created_at DESC, run_id DESC
LIMIT 1;
