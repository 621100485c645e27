-- Status counts of a map's views for the pipeline's table artifact: one row per status
-- (ok / no_imagery / skipped / failed) with the views and places it covers, and the distinct
-- reasons of failed and skipped views. $map: the map's name.
SELECT i.status,
       count(*) AS views,
       count(DISTINCT i.location_id) AS locations,
       string_agg(DISTINCT i.reason, '; ' ORDER BY i.reason) FILTER (WHERE i.status IN ('failed', 'skipped')) AS reasons
FROM images i
SEMI JOIN (SELECT location_id FROM locations WHERE map = $map) l ON l.location_id = i.location_id
GROUP BY i.status
ORDER BY i.status;
