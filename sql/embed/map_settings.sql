-- The view settings (width, height, fov, pitch) embed uses for map $map when none are named
-- (sql/embed/map_headings.sql then gives the headings at the settings chosen). What the map's
-- latest fetch asked for (map_views; a folder import has no width and height: its files stand
-- for any size). Else, for a map fetched before map_views existed: of the settings its places
-- have 'ok' views at, the one that covers the most places, the most recently fetched of equals
-- (a place shared with another map fetched at other settings does not outvote the map's own
-- fetch); a folder import's views have no width and height here, and settings the API fetched
-- come first. No row when the map has neither.
WITH asked AS (
    SELECT width, height, fov, pitch, 0 AS rank
    FROM map_views
    WHERE map = $map
    ORDER BY fetched_at DESC
    LIMIT 1
), ok AS (
    SELECT CASE WHEN i.source = 'folder' THEN NULL ELSE i.width END AS width,
           CASE WHEN i.source = 'folder' THEN NULL ELSE i.height END AS height,
           i.fov, i.pitch, i.location_id, i.fetched_at
    FROM images i
    WHERE i.status = 'ok'
      AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
), seen AS (
    SELECT width, height, fov, pitch, 1 AS rank
    FROM ok
    GROUP BY width, height, fov, pitch
    ORDER BY width IS NULL, count(DISTINCT location_id) DESC, max(fetched_at) DESC, width DESC, height DESC, fov, pitch
    LIMIT 1
)
SELECT width, height, fov, pitch FROM (SELECT * FROM asked UNION ALL SELECT * FROM seen)
ORDER BY rank
LIMIT 1;
