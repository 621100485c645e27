-- The 'ok' views of the locations in $ids, in heading order, each with the per-view vector
-- already in the lake for ($model, $precision, $revision) from the same image bytes, if any
-- (so mean pooling can re-pool without running the model again).
SELECT i.location_id, i.heading, i.path, i.sha256, v.vector AS vector
FROM images i
LEFT JOIN embedding_views v
       ON v.location_id = i.location_id AND v.heading = i.heading
      AND v.model = $model AND v.precision = $precision
      AND v.model_revision = $revision AND v.image_sha256 = i.sha256
WHERE i.status = 'ok'
  AND i.location_id IN (SELECT unnest($ids::VARCHAR[]))
ORDER BY i.location_id, i.heading;
