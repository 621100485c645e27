-- The study set of one earlier search ($search_id): the objects of its places, best first
-- (then input order), as written in the file (docs/search.md).
WITH found AS (
    SELECT s.maps, unnest(s.location_ids) AS location_id, generate_subscripts(s.location_ids, 1) AS rank
    FROM searches s
    WHERE s.search_id = $search_id
)
SELECT l.map, l.location_id, l.raw
FROM found f
JOIN locations l ON l.location_id = f.location_id AND list_contains(f.maps, l.map)
ORDER BY f.rank, l.map, l.position;
