-- $headings: the headings pooled (the map's latest fetch's, map_views), NULL for every heading.
-- Places of map $map that need an embedding for ($model, $pooling, $precision) from the views at
-- one set of view settings ($width, $height, $fov, $pitch; $view_settings: the same as text,
-- e.g. '640x640/fov90/pitch0'; a folder import's view matches any size, as in sql/fetch/plan.sql:
-- one view per heading, the latest): they have at least one 'ok' view at those settings and no
-- embedding yet, or one made from other view settings (embeddings written before settings were
-- recorded count as 640x640/fov90/pitch0), or from a different number of views (more views were
-- fetched since), or by another revision of the model ($revision: new weights in a model folder
-- or a newer hub snapshot). Input order; with the number of views each will use. The
-- embeddings' current files are read for a few narrow columns (never the vectors), so planning a map
-- costs little memory however large the lake.
WITH ok AS (
    SELECT i.location_id, count(DISTINCT i.heading) AS views
    FROM images i
    WHERE i.status = 'ok'
      AND (i.source = 'folder' OR (i.width = $width AND i.height = $height)) AND i.fov = $fov AND i.pitch = $pitch
      AND ($headings::INTEGER[] IS NULL OR list_contains($headings::INTEGER[], i.heading))
      AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
    GROUP BY i.location_id
), done AS (
    SELECT location_id, view_count, model_revision,
           coalesce(view_settings, '640x640/fov90/pitch0') AS view_settings
    FROM lake_embeddings
    WHERE model = $model AND pooling = $pooling AND precision = $precision
      AND location_id IN (SELECT location_id FROM ok)
)
SELECT l.location_id, ok.views
FROM places l
JOIN ok ON ok.location_id = l.location_id
LEFT JOIN done e ON e.location_id = l.location_id
WHERE l.map = $map
  AND (e.location_id IS NULL OR e.view_count <> ok.views OR e.model_revision IS DISTINCT FROM $revision
       OR e.view_settings <> $view_settings)
ORDER BY l.position;
