-- The per-view vectors of the locations in $ids for ($model, $precision, $revision) at
-- $view_settings, with the image bytes they came from (embed/views.sql found them reusable).
SELECT location_id, heading, image_sha256, vector
FROM lake_embedding_views
WHERE location_id IN (SELECT unnest($ids::VARCHAR[])) AND model = $model AND precision = $precision
  AND model_revision = $revision AND coalesce(view_settings, '640x640/fov90/pitch0') = $view_settings;
