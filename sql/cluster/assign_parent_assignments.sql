-- Every assignment of the parent run ($run), copied unchanged into the assign run.
SELECT location_id, cluster, distance FROM cluster_assignments WHERE run_id = $run ORDER BY location_id;
