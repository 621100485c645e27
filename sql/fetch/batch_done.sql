-- For a retried fetch batch: which of its places' views at the batch's view settings are
-- already done ('ok' or 'no_imagery'; with --official-only also 'skipped'), and the panorama an
-- earlier attempt pinned for each place (at any settings).
-- $ids: the batch's location ids (VARCHAR[]); $official_only (BOOLEAN); $width, $height, $fov, $pitch.
SELECT location_id,
       list(DISTINCT heading) FILTER (WHERE (status IN ('ok', 'no_imagery') OR (status = 'skipped' AND $official_only))
                                 AND (source = 'folder' OR (width = $width AND height = $height)) AND fov = $fov AND pitch = $pitch) AS done_headings,
       arg_max(pano_id, fetched_at) FILTER (WHERE status IN ('ok', 'skipped') AND pano_id IS NOT NULL) AS pinned_pano_id
FROM images
WHERE location_id IN (SELECT unnest($ids::VARCHAR[]))
GROUP BY location_id;
