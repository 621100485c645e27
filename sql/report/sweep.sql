-- The runs of one k-sweep, by k: what the sweep plot draws.
SELECT run_id, name, k, inertia, silhouette
FROM cluster_runs
WHERE sweep_id = $sweep
ORDER BY k, created_at;
