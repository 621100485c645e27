-- The map's previous version of run $run, the one its summary is compared with: the latest
-- run of map $map created before it with the same k, else the latest earlier run of any k.
-- Runs of the same request ($exclude: the run_ids of the sweep or request that produced $run)
-- never count, so a sweep is compared with what the map had before it, not with a sibling k.
-- (sql/cluster/previous_run.sql, which numbers a new run's clusters, takes any latest run.)
WITH me AS (
    SELECT run_id, k, created_at FROM cluster_runs WHERE map = $map AND run_id = $run
)
SELECT r.run_id, r.name, r.k
FROM cluster_runs r, me
WHERE r.map = $map
  AND NOT list_contains($exclude::VARCHAR[], r.run_id)
  AND (r.created_at < me.created_at OR (r.created_at = me.created_at AND r.run_id < me.run_id))
ORDER BY r.k = me.k DESC, r.created_at DESC, r.run_id DESC
LIMIT 1;
