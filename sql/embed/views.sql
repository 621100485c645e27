-- The 'ok' views of the locations in $ids, in heading order, each with the per-view vector
-- already in the lake for ($model, $precision, $revision) from the same image bytes, if any
-- (so mean pooling can re-pool without running the model again).
-- The raw files are read, not the views: the batch's locations (and the model) are filtered
-- first and only then is the latest row per key kept, so the work and the memory of one batch
-- do not grow with the lake (a view's latest-row window would run over every row, vectors
-- included). The keys filtered on are part of each window's partition: same rows as the views.
WITH img AS (
    SELECT location_id, heading, status, path, sha256
    FROM lake_images
    WHERE location_id IN (SELECT unnest($ids::VARCHAR[]))
), vec AS (
    SELECT location_id, heading, model_revision, image_sha256, vector
    FROM lake_embedding_views
    WHERE location_id IN (SELECT unnest($ids::VARCHAR[])) AND model = $model AND precision = $precision
)
SELECT i.location_id, i.heading, i.path, i.sha256, v.vector AS vector
FROM img i
LEFT JOIN vec v
       ON v.location_id = i.location_id AND v.heading = i.heading
      AND v.model_revision = $revision AND v.image_sha256 = i.sha256
WHERE i.status = 'ok'
ORDER BY i.location_id, i.heading;
