-- Locations of map $map that need an embedding for ($model, $pooling, $precision): they have at
-- least one 'ok' view and no embedding yet, or one made from a different number of views (more
-- views were fetched since). Input order; with the number of views each will use.
WITH ok AS (
    SELECT i.location_id, count(*) AS views
    FROM images i
    WHERE i.status = 'ok'
      AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
    GROUP BY i.location_id
)
SELECT l.location_id, ok.views
FROM locations l
JOIN ok ON ok.location_id = l.location_id
LEFT JOIN embeddings e
       ON e.location_id = l.location_id AND e.model = $model AND e.pooling = $pooling AND e.precision = $precision
WHERE l.map = $map
  AND (e.location_id IS NULL OR e.view_count <> ok.views)
ORDER BY l.position;
