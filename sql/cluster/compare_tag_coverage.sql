-- How many of a run's assigned places carry a human tag (svcluster's own tags, and tags
-- matching $ignore when it is not NULL, left out).
WITH ours AS (SELECT coalesce(list(tag), []::VARCHAR[]) AS tags FROM svcluster_tags())
SELECT count(*) AS assigned,
       count(*) FILTER (WHERE len(list_filter(coalesce(p.tags, []::VARCHAR[]),
                                              lambda t: NOT list_contains(ours.tags, t)
                                                        AND ($ignore IS NULL OR NOT regexp_full_match(t, $ignore)))) > 0) AS tagged
FROM cluster_points p, ours
WHERE p.run_id = $run;
