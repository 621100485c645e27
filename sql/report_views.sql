-- The fetched views (status ok) of the locations a report samples, by location and heading.
SELECT location_id, heading, path, capture_date, pano_id
FROM images
WHERE status = 'ok' AND path IS NOT NULL AND location_id IN (SELECT unnest($ids::VARCHAR[]))
ORDER BY location_id, heading;
