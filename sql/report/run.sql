-- One committed run with every parameter and metric (the report's header).
SELECT *
FROM cluster_runs
WHERE run_id = $run;
