-- The view settings (width, height, fov, pitch) embed uses for map $map when none are named: of
-- the settings its places have 'ok' views at, the one that covers the most places, and of those
-- the most recently fetched (a map fetched again at another size: both cover every place, the
-- new one wins; a place shared with another map fetched at other settings does not outvote the
-- map's own fetch). No row when the map has no 'ok' view.
SELECT i.width, i.height, i.fov, i.pitch,
       count(DISTINCT i.location_id) AS places,
       max(i.fetched_at) AS fetched_at
FROM images i
WHERE i.status = 'ok'
  AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
GROUP BY i.width, i.height, i.fov, i.pitch
ORDER BY places DESC, fetched_at DESC, i.width DESC, i.height DESC, i.fov, i.pitch
LIMIT 1;
