-- The runs `svcluster runs` lists: every map's, or one map's ($map NULL = all).
SELECT name, run_id, map, model, pooling, precision, algorithm, k, pca_dims, seed, n_init, max_iter,
       pca_explained_variance, n_locations, nonempty_clusters, inertia, silhouette, aligned_to_name,
       sweep_id, warnings, method, parent_run_id, parent_name, stale, created_at
FROM cluster_run_list
WHERE $map IS NULL OR map = $map
ORDER BY map, created_at, run_id;
