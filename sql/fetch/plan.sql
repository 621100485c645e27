-- What the fetch step still has to do for a map, one row per place in input order:
-- the wanted headings that are not done yet (NULL when none are missing), and the panorama to
-- ask for: the one an earlier fetch pinned for this place (so all its views come from one
-- panorama; a refreshed id once a stale one was replaced), else the map's (decoded) pano id,
-- else NULL (look up by location).
-- Done: a row at the same view settings ($width, $height, $fov, $pitch: the settings are part of
-- what a view is, so a fetch at another size fetches its own views) that is 'ok' or
-- 'no_imagery'; with --official-only also 'skipped' (a third-party panorama it refused to buy),
-- which a fetch without it fetches. A folder import's file (the notebook's image, its real size
-- recorded) stands for the view at any size: only its fov and pitch must match. The pinned
-- panorama is any settings' (one panorama per place).
-- $map: the map's name; $headings: the wanted headings (INTEGER[]); $official_only (BOOLEAN).
WITH locs AS (
    SELECT location_id, position, lat, lng, pano_id
    FROM places
    WHERE map = $map
), done AS (
    SELECT i.location_id, i.heading, i.status, i.pano_id, i.fetched_at,
           (i.source = 'folder' OR (i.width = $width AND i.height = $height)) AND i.fov = $fov AND i.pitch = $pitch AS same_settings
    FROM images i
    SEMI JOIN locs l ON l.location_id = i.location_id
), pinned AS (
    SELECT location_id, arg_max(pano_id, fetched_at) AS pano_id
    FROM done
    WHERE status IN ('ok', 'skipped') AND pano_id IS NOT NULL
    GROUP BY location_id
)
SELECT l.location_id, l.position, l.lat, l.lng,
       coalesce(p.pano_id, l.pano_id) AS pano_id,
       list(h.heading ORDER BY h.heading) FILTER (WHERE d.location_id IS NULL) AS headings
FROM locs l
CROSS JOIN (SELECT unnest($headings::INTEGER[]) AS heading) h
LEFT JOIN done d
       ON d.location_id = l.location_id AND d.heading = h.heading
      AND d.same_settings
      AND (d.status IN ('ok', 'no_imagery') OR (d.status = 'skipped' AND $official_only))
LEFT JOIN pinned p ON p.location_id = l.location_id
GROUP BY l.location_id, l.position, l.lat, l.lng, p.pano_id, l.pano_id
ORDER BY l.position;
