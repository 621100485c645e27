-- A run's cluster per location, by location_id.
SELECT location_id, cluster
FROM cluster_assignments
WHERE run_id = $run_id
ORDER BY location_id;
