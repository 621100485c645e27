-- Which embeddings exist for the locations of one map: one row per (model, pooling, precision)
-- with how many of the map's locations have one and the vector size. (Read from the files
-- directly: counting distinct locations needs no latest-row dedup.)
SELECT e.model, e.pooling, e.precision, count(DISTINCT e.location_id) AS locations, max(e.dim) AS dim,
       (SELECT count(*) FROM places WHERE map = $map) AS map_locations
FROM lake_embeddings e
WHERE e.location_id IN (SELECT location_id FROM locations WHERE map = $map)
GROUP BY ALL
ORDER BY e.model, e.pooling, e.precision;
