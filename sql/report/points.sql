-- Every location a run assigned, with where it is: one point of the report's map. Sorted by
-- cluster, then nearest-to-centroid first (so a cluster's most typical locations come first).
SELECT a.location_id, a.cluster, a.distance, l.lat, l.lng, l.country_code, l.region_code, l.tags
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
JOIN places l ON l.map = r.map AND l.location_id = a.location_id
WHERE a.run_id = $run
ORDER BY a.cluster, a.distance NULLS LAST, a.location_id;
