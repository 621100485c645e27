-- Embedding coverage of a map for the pipeline's table artifact: how many of its locations
-- have an embedding per (model, pooling, precision), and how many have none.
-- $map: the map's name.
WITH locs AS (SELECT location_id FROM places WHERE map = $map)
SELECT e.model, e.pooling, e.precision, count(*) AS locations, any_value(e.dim) AS dim
FROM embeddings e
SEMI JOIN locs l ON l.location_id = e.location_id
GROUP BY e.model, e.pooling, e.precision
UNION ALL
SELECT NULL, NULL, NULL, count(*), NULL
FROM locs l
ANTI JOIN embeddings e ON e.location_id = l.location_id
HAVING count(*) > 0
ORDER BY locations DESC;
