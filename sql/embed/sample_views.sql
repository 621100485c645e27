-- A deterministic sample of up to $n 'ok' views of map $map (ordered by a hash of the key,
-- so the same lake gives the same sample), for the precision quality check.
SELECT i.location_id, i.heading, i.path
FROM images i
WHERE i.status = 'ok'
  AND i.location_id IN (SELECT location_id FROM locations WHERE map = $map)
ORDER BY hash(i.location_id || ':' || CAST(i.heading AS VARCHAR)), i.location_id, i.heading
LIMIT $n;
