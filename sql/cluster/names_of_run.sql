-- The stored names of a run's clusters, best first.
SELECT cluster, rank, name, score, lift, model
FROM cluster_names
WHERE run_id = $run
ORDER BY cluster, rank;
