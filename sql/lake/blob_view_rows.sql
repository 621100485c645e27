-- The latest images row (every column but written_at) of each view (place, heading, settings) of the places in $ids: the
-- row a view marked failed because of its blob is copied from (status and reason replaced), so
-- the failed row keeps the panorama, settings and the path of the blob that was bad.
SELECT * EXCLUDE (written_at) REPLACE (
           coalesce(width, 640)::INTEGER AS width, coalesce(height, 640)::INTEGER AS height,
           coalesce(fov, 90)::DOUBLE AS fov, coalesce(pitch, 0)::DOUBLE AS pitch)
FROM lake_images
WHERE location_id IN (SELECT unnest($ids::VARCHAR[]));
