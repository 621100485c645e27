-- The export of one map, optionally tagged by one run and with refreshed pano ids (see
-- export_locations in export/export.sql).
SELECT json, tag, refreshed, outlier
FROM export_locations($map, $run, $tag_format, refresh := $refresh, noise_format := $noise_format, outliers := $outliers);
