-- The run `svcluster assign` extends ($run): its whole committed row.
SELECT * EXCLUDE (name) FROM cluster_runs WHERE run_id = $run;
