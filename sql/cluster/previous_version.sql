-- The previous version of run $run of map $map, the one its summary and report compare it with
-- (tasks/cluster/runs.py previous_version): the latest run of the map made before it with the
-- same k, else the latest earlier run of any k. Runs of its own sweep never count: runs that
-- differ from it only in k share its sweep_id (the `cluster_sweep` view; a run without one has
-- no siblings), so a sweep's run is compared with what the map had before the sweep, not with a
-- sibling k. (A new fit's cluster numbers follow cluster/numbered_after.sql, which counts them.)
WITH me AS (
    SELECT run_id, k, sweep_id, created_at FROM cluster_runs WHERE map = $map AND run_id = $run
)
SELECT r.run_id, r.map, r.name, r.k, r.stale
FROM cluster_run_list r, me
WHERE r.map = $map
  AND r.run_id <> me.run_id
  AND NOT coalesce(r.sweep_id = me.sweep_id, false)
  AND (r.created_at < me.created_at OR (r.created_at = me.created_at AND r.run_id < me.run_id))
ORDER BY r.k = me.k DESC, r.created_at DESC, r.run_id DESC
LIMIT 1;
