-- The views of map $map whose blob a fetch checks before planning: every 'ok' view (its blob
-- must exist and, with --verify, hash to its sha256) and every view marked failed because of
-- its blob (reason 'blob …', the blob's path kept), whose damaged blob is removed so that the
-- re-fetch stores the new bytes. Latest row per view; one row per (place, heading, view settings).
SELECT i.location_id, i.heading, i.width, i.height, i.fov, i.pitch, i.status, i.reason, i.path, i.sha256
FROM images i
WHERE i.location_id IN (SELECT location_id FROM places WHERE map = $map)
  AND i.path IS NOT NULL
  AND (i.status = 'ok' OR (i.status = 'failed' AND i.reason LIKE 'blob %'))
ORDER BY i.path, i.location_id, i.heading;
