-- Tagged JSON export. Each location's original object (locations.raw) comes out unchanged,
-- except that a cluster run adds one tag to extra.tags.

-- THE PLUG: the tag a cluster run gives each location it assigned. `tag_format` placeholders:
-- {k} (the run's k), {cluster} (the cluster number), {run} (the run's MAP@vN name),
-- {name} (the cluster's best name from cluster_names; empty when the run has none).
CREATE OR REPLACE MACRO run_tags(run, tag_format) AS TABLE
SELECT a.location_id,
       replace(replace(replace(replace(tag_format,
               '{k}', r.k::VARCHAR),
               '{cluster}', a.cluster::VARCHAR),
               '{run}', r.name),
               '{name}', coalesce(n.name, '')) AS tag
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
LEFT JOIN cluster_names n ON n.run_id = a.run_id AND n.cluster = a.cluster AND n.rank = 1
WHERE a.run_id = run;

-- One row per location of `map_name` in input order: its JSON object, with `run`'s tag
-- appended to extra.tags (tags matching `stale_tag_pattern`, an earlier svcluster tag, are
-- dropped first so tags never pile up). With `run` NULL every object is the input's own.
CREATE OR REPLACE MACRO export_locations(map_name, run, tag_format, stale_tag_pattern) AS TABLE
SELECT l.position,
       l.location_id,
       t.tag,
       -- Only extra.tags is patched (a nested merge patch keeps every other field of extra,
       -- nulls included). A location the run did not assign keeps its object verbatim unless
       -- it carries an earlier svcluster tag, which is dropped: it would be stale.
       CASE WHEN run IS NULL
              OR (t.tag IS NULL AND len(list_filter(coalesce(l.tags, []::VARCHAR[]),
                                                    lambda x: regexp_full_match(x, stale_tag_pattern))) = 0)
            THEN l.raw
            ELSE json_merge_patch(
                     l.raw::JSON,
                     json_object('extra', json_object('tags', to_json(list_concat(
                         list_filter(coalesce(l.tags, []::VARCHAR[]),
                                     lambda x: NOT regexp_full_match(x, stale_tag_pattern)),
                         CASE WHEN t.tag IS NULL THEN []::VARCHAR[] ELSE [t.tag] END)))))::VARCHAR
       END AS json
FROM locations l
LEFT JOIN run_tags(run, tag_format) t ON t.location_id = l.location_id
WHERE l.map = map_name
ORDER BY l.position;
