-- $headings: the headings pooled (the map's latest fetch's, map_views), NULL for every heading.
-- The 'ok' views at one set of view settings ($width, $height, $fov, $pitch; $view_settings the
-- same as text) of the locations in $ids, in heading order, each with whether a per-view vector
-- is already in the lake for ($model, $precision, $revision) from the same image bytes
-- (`reusable`: mean pooling can re-pool without running the model again; embed/view_vectors.sql
-- reads those vectors). Views at other settings (a fetch at another size, another map's fetch of
-- a shared place) are never pooled in. The tables' current files are read (lake_images,
-- lake_embedding_views: one row per key), whole but for the vectors: a scan reads every row's
-- columns, and the vectors of embedding_views are most of the lake. Rows without settings read
-- as 640x640, fov 90, pitch 0, as in the images view. A folder import's view matches any size
-- (sql/fetch/plan.sql): of the rows that match, the latest per heading is pooled.
WITH img AS (
    SELECT location_id, heading, status, path, sha256,
           coalesce(width, 640) AS width, coalesce(height, 640) AS height, coalesce(fov, 90) AS fov, coalesce(pitch, 0) AS pitch
    FROM lake_images
    WHERE location_id IN (SELECT unnest($ids::VARCHAR[]))
      AND (source = 'folder' OR (coalesce(width, 640) = $width AND coalesce(height, 640) = $height))
      AND coalesce(fov, 90) = $fov AND coalesce(pitch, 0) = $pitch
      AND ($headings::INTEGER[] IS NULL OR list_contains($headings::INTEGER[], heading))
    QUALIFY row_number() OVER (PARTITION BY location_id, heading ORDER BY written_at DESC) = 1
), vec AS (
    SELECT location_id, heading, model_revision, image_sha256
    FROM lake_embedding_views
    WHERE location_id IN (SELECT unnest($ids::VARCHAR[])) AND model = $model AND precision = $precision
      AND coalesce(view_settings, '640x640/fov90/pitch0') = $view_settings
)
SELECT i.location_id, i.heading, i.path, i.sha256, i.width, i.height, i.fov, i.pitch,
       v.location_id IS NOT NULL AS reusable
FROM img i
LEFT JOIN vec v
       ON v.location_id = i.location_id AND v.heading = i.heading
      AND v.model_revision = $revision AND v.image_sha256 = i.sha256
WHERE i.status = 'ok'
ORDER BY i.location_id, i.heading;
