-- The best name of every named cluster, for the runs of one map (or of all maps when $map is NULL).
SELECT n.run_id, n.cluster, n.name
FROM cluster_names n
JOIN cluster_runs r ON r.run_id = n.run_id
WHERE n.rank = 1 AND ($map IS NULL OR r.map = $map)
ORDER BY n.run_id, n.cluster;
