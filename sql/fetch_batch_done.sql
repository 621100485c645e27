-- For a retried fetch batch: which of its locations' views are already done ('ok' or
-- 'no_imagery'), and the panorama an earlier attempt pinned for each location.
-- $ids: the batch's location ids (VARCHAR[]).
SELECT location_id,
       list(DISTINCT heading) FILTER (WHERE status IN ('ok', 'no_imagery')) AS done_headings,
       arg_max(pano_id, fetched_at) FILTER (WHERE status = 'ok' AND pano_id IS NOT NULL) AS pinned_pano_id
FROM images
WHERE location_id IN (SELECT unnest($ids::VARCHAR[]))
GROUP BY location_id;
