-- The run a grown map's new places would be assigned to (svcluster run --grow): the map's latest
-- run over the same vector set ($model, $pooling, $precision) with the same k ($k) and algorithm,
-- made by clustering or by an earlier assign. Stale runs count: a map that grew was re-ingested,
-- so its earlier runs are of an earlier version of it.
SELECT run_id, map, name, k, stale
FROM cluster_run_list
WHERE map = $map AND model = $model AND coalesce(pooling, 'mean') = $pooling
  AND coalesce(precision, 'fp32') = $precision AND k = $k AND algorithm = $algorithm
ORDER BY created_at DESC, run_id DESC
LIMIT 1;
