-- Places of map $map that need an embedding for ($model, $pooling, $precision): they have at
-- least one 'ok' view and no embedding yet, or one made from a different number of views (more
-- views were fetched since), or one made by another revision of the model ($revision: new
-- weights in a model folder or a newer hub snapshot). Input order; with the number of views each
-- will use. The embeddings' raw files are read for a few narrow columns (never the vectors), so
-- planning a map costs little memory however large the lake.
WITH ok AS (
    SELECT i.location_id, count(*) AS views
    FROM images i
    WHERE i.status = 'ok'
      AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
    GROUP BY i.location_id
), done AS (
    SELECT location_id, view_count, model_revision
    FROM lake_embeddings
    WHERE model = $model AND pooling = $pooling AND precision = $precision
      AND location_id IN (SELECT location_id FROM ok)
)
SELECT l.location_id, ok.views
FROM places l
JOIN ok ON ok.location_id = l.location_id
LEFT JOIN done e ON e.location_id = l.location_id
WHERE l.map = $map
  AND (e.location_id IS NULL OR e.view_count <> ok.views OR e.model_revision IS DISTINCT FROM $revision)
ORDER BY l.position;
