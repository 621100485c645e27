-- The previous version of run $run of map $map, the one its summary and report compare it with
-- (tasks/cluster/runs.py previous_version): the latest run of the map made before it with the
-- same k, else the latest earlier run of any k. Runs of its own request never count (the other
-- k of one sweep share its request_id), so a sweep's run is compared with what the map had
-- before the sweep, not with a sibling k; an earlier request with other k does count. Runs
-- written before request_id was kept (null) are siblings when they share a sweep_id (the same
-- parameters, another k). (A new fit's cluster numbers follow cluster/numbered_after.sql.)
WITH me AS (
    SELECT run_id, k, sweep_id, request_id, created_at FROM cluster_runs WHERE map = $map AND run_id = $run
)
SELECT r.run_id, r.map, r.name, r.k, r.stale
FROM cluster_run_list r
JOIN cluster_runs c ON c.run_id = r.run_id
CROSS JOIN me
WHERE r.map = $map
  AND r.run_id <> me.run_id
  AND NOT CASE
      WHEN c.request_id IS NOT NULL AND me.request_id IS NOT NULL THEN c.request_id = me.request_id
      WHEN c.request_id IS NULL AND me.request_id IS NULL THEN coalesce(c.sweep_id = me.sweep_id, false)
      ELSE false
  END
  AND (r.created_at < me.created_at OR (r.created_at = me.created_at AND r.run_id < me.run_id))
ORDER BY r.k = me.k DESC, r.created_at DESC, r.run_id DESC
LIMIT 1;
