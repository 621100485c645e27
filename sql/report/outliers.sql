-- The run's outliers the report shows: farthest out of their cluster first (cluster_outliers).
SELECT location_id, cluster, distance, relative_distance, rank_in_cluster, rank_in_run,
       count(*) OVER () AS total
FROM cluster_outliers
WHERE run_id = $run
ORDER BY rank_in_run
LIMIT $limit;
