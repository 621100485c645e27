-- How many of a run's assigned locations carry a human tag (svcluster's own tags ignored).
SELECT count(*) AS assigned,
       count(*) FILTER (WHERE len(list_filter(coalesce(tags, []::VARCHAR[]),
                                              lambda t: NOT regexp_full_match(t, $ignore))) > 0) AS tagged
FROM cluster_points
WHERE run_id = $run;
