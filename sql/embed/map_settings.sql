-- The view settings (width, height, fov, pitch) embed uses for map $map when none are named: of
-- the settings its places have 'ok' views at, the one that covers the most places, and of those
-- the most recently fetched (a map fetched again at another size: both cover every place, the
-- new one wins; a place shared with another map fetched at other settings does not outvote the
-- map's own fetch). A folder import's view stands for any size (sql/fetch/plan.sql): its width
-- and height are NULL here, and settings the API fetched come first. No row when the map has
-- no 'ok' view.
WITH ok AS (
    SELECT CASE WHEN i.source = 'folder' THEN NULL ELSE i.width END AS width,
           CASE WHEN i.source = 'folder' THEN NULL ELSE i.height END AS height,
           i.fov, i.pitch, i.location_id, i.fetched_at
    FROM images i
    WHERE i.status = 'ok'
      AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
)
SELECT width, height, fov, pitch, count(DISTINCT location_id) AS places, max(fetched_at) AS fetched_at
FROM ok
GROUP BY width, height, fov, pitch
ORDER BY width IS NULL, places DESC, fetched_at DESC, width DESC, height DESC, fov, pitch
LIMIT 1;
