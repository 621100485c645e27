-- One committed run by run_id, with its MAP@vN name, its sizes, its warnings and how many
-- pairs of near-identical panoramas it holds (duplicate_panoramas).
SELECT run_id, name, map, k, n_locations, inertia, silhouette, sizes, aligned_to, sweep_id, warnings,
       (SELECT count(*) FROM duplicate_panoramas d WHERE d.run_id = $run_id) AS duplicates
FROM cluster_runs
WHERE run_id = $run_id;
