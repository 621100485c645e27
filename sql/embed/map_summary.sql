-- $headings: the headings pooled (the map's latest fetch's, map_views), NULL for every heading.
-- How many places map $map has, how many of them have at least one 'ok' view, and why the
-- others have none: Street View has no imagery there (every view fetched is no_imagery: a
-- fetch cannot change that), a fetch failed (some view failed: a fetch retries it), or nothing
-- was fetched yet (no view in the lake, or only views of another status). Only the views at the
-- view settings embed pools are counted ($width, $height, $fov, $pitch; a folder import's view
-- at any size, as in sql/embed/todo.sql): a place with views at other settings only is not
-- fetched at these.
WITH status AS (
    SELECT l.location_id,
           count(*) FILTER (WHERE i.status = 'ok') AS ok,
           count(*) FILTER (WHERE i.status = 'no_imagery') AS no_imagery,
           count(*) FILTER (WHERE i.status = 'failed') AS failed
    FROM places l
    LEFT JOIN images i ON i.location_id = l.location_id
          AND (i.source = 'folder' OR (i.width = $width AND i.height = $height)) AND i.fov = $fov AND i.pitch = $pitch
          AND ($headings::INTEGER[] IS NULL OR list_contains($headings::INTEGER[], i.heading))
    WHERE l.map = $map
    GROUP BY l.location_id
)
SELECT count(*) AS locations,
       count(*) FILTER (WHERE ok > 0) AS with_views,
       count(*) FILTER (WHERE ok = 0 AND no_imagery > 0 AND failed = 0) AS no_imagery,
       count(*) FILTER (WHERE ok = 0 AND failed > 0) AS failed,
       count(*) FILTER (WHERE ok = 0 AND no_imagery = 0 AND failed = 0) AS not_fetched
FROM status;
