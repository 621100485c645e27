-- A run named by its run_id, a unique run_id prefix, or MAP@vN.
SELECT run_id, map, name, k
FROM cluster_runs
WHERE run_id = $ref OR name = $ref OR (length($ref) >= 6 AND starts_with(run_id, $ref))
ORDER BY created_at;
