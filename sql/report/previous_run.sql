-- The run made on the same map just before `run` (its previous version), if any.
WITH ordered AS (
    SELECT run_id, name, k, row_number() OVER (ORDER BY created_at, run_id) AS n
    FROM cluster_runs
    WHERE map = $map
)
SELECT o.run_id, o.name, o.k
FROM ordered o
JOIN ordered me ON me.run_id = $run
WHERE o.n = me.n - 1;
