-- How many pairs of near-identical panoramas run $run_id holds: the pairs the cluster step found
-- (`found`, a cheap count) and those whose panoramas differ (`duplicates`, duplicate_panoramas),
-- the second only counted when there is a pair at all.
WITH found AS (SELECT count(*) AS n FROM cluster_duplicates WHERE run_id = $run_id)
SELECT found.n AS found,
       CASE WHEN found.n = 0 THEN 0
            ELSE (SELECT count(*) FROM duplicate_panoramas WHERE run_id = $run_id) END AS duplicates
FROM found;
