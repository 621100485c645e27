-- How the objects and places of run $run's map stand against the run today: in the run, left
-- out although the place has an embedding of the run's model/pooling/precision (made after the
-- run, or the run is of an earlier version of the map), or left out with no such embedding; and
-- how many places the run assigned that the map no longer has. (Embeddings are read from the
-- files for their key columns only: no vector is read.)
WITH r AS (
    SELECT run_id, map, model, coalesce(pooling, 'mean') AS pooling, coalesce(precision, 'fp32') AS precision
    FROM cluster_runs WHERE run_id = $run
), assigned AS (
    SELECT location_id FROM cluster_assignments WHERE run_id = $run
), embedded AS (
    SELECT DISTINCT e.location_id
    FROM lake_embeddings e, r
    WHERE e.model = r.model AND e.pooling = r.pooling AND e.precision = r.precision
      AND e.location_id IN (SELECT location_id FROM locations WHERE map = r.map)
), objects AS (
    SELECT l.location_id,
           l.location_id IN (SELECT location_id FROM assigned) AS in_run,
           l.location_id IN (SELECT location_id FROM embedded) AS embedded
    FROM locations l, r
    WHERE l.map = r.map
)
SELECT count(*) AS objects,
       count(*) FILTER (WHERE in_run) AS objects_in_run,
       count(*) FILTER (WHERE NOT in_run AND embedded) AS objects_embedded_not_in_run,
       count(*) FILTER (WHERE NOT in_run AND NOT embedded) AS objects_without_embedding,
       count(DISTINCT location_id) AS places,
       count(DISTINCT location_id) FILTER (WHERE in_run) AS places_in_run,
       count(DISTINCT location_id) FILTER (WHERE NOT in_run AND embedded) AS places_embedded_not_in_run,
       count(DISTINCT location_id) FILTER (WHERE NOT in_run AND NOT embedded) AS places_without_embedding,
       (SELECT count(*) FROM assigned
        WHERE location_id NOT IN (SELECT location_id FROM objects)) AS run_places_gone
FROM objects;
