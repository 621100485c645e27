-- The view settings (width, height, fov, pitch) and headings embed uses for map $map when none
-- are named (sql/embed/map_headings.sql: the headings at named settings). What the map's latest fetch asked for (map_views; a folder import has no width and
-- height: its files stand for any size), else, for a map fetched before that was recorded: of
-- the settings its places have 'ok' views at, the one that covers the most places, and of those
-- the most recently fetched (a map fetched again at another size: both cover every place, the
-- new one wins; a place shared with another map fetched at other settings does not outvote the
-- map's own fetch), with every heading (headings NULL). A folder import's view stands for any
-- size (sql/fetch/plan.sql): its width and height are NULL here, and settings the API fetched
-- come first. No row when the map has neither.
WITH asked AS (
    SELECT width, height, fov, pitch, headings, 0 AS rank
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
    SELECT width, height, fov, pitch, NULL::INTEGER[] AS headings, 1 AS rank
    FROM ok
    GROUP BY width, height, fov, pitch
    ORDER BY width IS NULL, count(DISTINCT location_id) DESC, max(fetched_at) DESC, width DESC, height DESC, fov, pitch
    LIMIT 1
)
SELECT width, height, fov, pitch, headings FROM (SELECT * FROM asked UNION ALL SELECT * FROM seen)
ORDER BY rank
LIMIT 1;
