-- The headings map $map's latest fetch at view settings ($width, $height, $fov, $pitch) asked
-- for (map_views; a folder import, whose files stand for any size, matches any width and height).
-- No row when no fetch at those settings was recorded: embed then pools every heading there.
SELECT headings
FROM map_views
WHERE map = $map AND fov = $fov AND pitch = $pitch
  AND ((width = $width AND height = $height) OR (width IS NULL AND source = 'folder'))
ORDER BY fetched_at DESC
LIMIT 1;
