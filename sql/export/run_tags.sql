-- The distinct tags an export of run $run with templates $tag_format / $noise_format writes
-- (and 'outlier' when $outliers and the run has one): recorded in exported_tags before the file
-- is written.
SELECT DISTINCT tag FROM (
    SELECT tag FROM run_tags($run, $tag_format, noise_format := $noise_format)
    UNION ALL
    SELECT 'outlier' FROM cluster_outliers WHERE $outliers AND run_id = $run
)
ORDER BY tag;
