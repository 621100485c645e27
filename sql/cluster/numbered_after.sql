-- The run a new fit of map $map with k $k is numbered after (tasks/cluster/step.py
-- align_to_previous): the map's latest committed run with the same k, else its latest committed
-- run of any k. Unlike the previous version (cluster/previous_version.sql, what a summary or
-- report compares a run with), the runs of the fit's own sweep count: a sweep writes its runs in
-- order of k, so k=4 follows the k=3 just written and a new cluster appears under the next
-- number (docs/clustering.md, "Stable cluster numbers"). Comparing with a sibling k would say
-- nothing about how the map's clustering changed; numbering after one keeps a sweep readable.
SELECT run_id, name, k
FROM cluster_runs
WHERE map = $map
ORDER BY k = $k DESC, created_at DESC, run_id DESC
LIMIT 1;
