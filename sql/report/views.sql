-- The fetched views (status ok) of the locations a report samples, by location and heading,
-- with the panorama and camera they show (for the Street View link of each thumbnail).
SELECT location_id, heading, path, capture_date, pano_id, pitch, fov
FROM images
WHERE status = 'ok' AND path IS NOT NULL AND location_id IN (SELECT unnest($ids::VARCHAR[]))
-- one view per heading: the latest fetched, when a place has views at several settings
QUALIFY row_number() OVER (PARTITION BY location_id, heading ORDER BY fetched_at DESC, width DESC) = 1
ORDER BY location_id, heading;
