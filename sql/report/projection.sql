-- The atlas coordinates stored for vector set $vector_set by one method and seed
-- (tasks/report/atlas.py): one row per place.
SELECT location_id, x, y
FROM projections
WHERE vector_set = $vector_set AND method = $method AND seed = $seed;
