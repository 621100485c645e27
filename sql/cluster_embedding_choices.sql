-- Which embeddings exist for the locations of one map: one row per (model, pooling, precision)
-- with how many of the map's locations have one and the vector size.
SELECT e.model, e.pooling, e.precision, count(*) AS locations, max(e.dim) AS dim,
       (SELECT count(*) FROM locations WHERE map = $map) AS map_locations
FROM embeddings e
SEMI JOIN locations l ON l.location_id = e.location_id AND l.map = $map
GROUP BY ALL
ORDER BY e.model, e.pooling, e.precision;
