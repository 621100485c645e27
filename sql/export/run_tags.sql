-- The distinct tags an export of run $run with template $tag_format writes: recorded in
-- exported_tags before the file is written.
SELECT DISTINCT tag FROM run_tags($run, $tag_format) ORDER BY tag;
