-- The run's near-identical panoramas the report shows: most similar first (duplicate_panoramas).
SELECT cluster, location_a, location_b, cosine, km, count(*) OVER () AS total
FROM duplicate_panoramas
WHERE run_id = $run
ORDER BY cosine DESC, location_a, location_b
LIMIT $limit;
