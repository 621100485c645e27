-- One committed run by run_id, with its MAP@vN name, its sizes and its warnings.
SELECT run_id, name, map, k, n_locations, inertia, silhouette, sizes, aligned_to, sweep_id, warnings
FROM cluster_runs
WHERE run_id = $run_id;
