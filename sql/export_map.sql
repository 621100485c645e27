-- The export of one map, optionally tagged by one run (see export_locations in export.sql).
SELECT json, tag FROM export_locations($map, $run, $tag_format, $stale);
