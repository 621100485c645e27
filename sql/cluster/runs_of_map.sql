-- The runs `svcluster runs` lists: every map's, or one map's ($map NULL = all), with the count
-- of their pairs of near-identical panoramas (duplicate_panoramas).
SELECT l.name, l.run_id, l.map, l.model, l.pooling, l.precision, l.algorithm, l.k, l.pca_dims, l.seed, l.n_init,
       l.max_iter, l.pca_explained_variance, l.n_locations, l.nonempty_clusters, l.inertia, l.silhouette,
       l.aligned_to_name, l.sweep_id, l.warnings, l.method, l.parent_run_id, l.parent_name, l.stale, l.created_at,
       coalesce(d.n, 0) AS duplicates
FROM cluster_run_list l
LEFT JOIN (SELECT run_id, count(*) AS n FROM duplicate_panoramas WHERE $map IS NULL OR map = $map GROUP BY run_id) d
       ON d.run_id = l.run_id
WHERE $map IS NULL OR l.map = $map
ORDER BY l.map, l.created_at, l.run_id;
