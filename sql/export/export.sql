-- Tagged JSON export. Each location's original object (locations.raw) comes out unchanged,
-- except that a cluster run adds one tag to extra.tags.

-- THE PLUG: the tag a cluster run gives each location it assigned. `tag_format` placeholders:
-- {k} (the run's k), {cluster} (the cluster number), {run} (the run's MAP@vN name),
-- {name} (the cluster's best name from cluster_names; empty when the run has none).
-- A place HDBSCAN left unclustered (cluster -1, noise) gets `noise_format` instead, with the
-- same placeholders ('k{k}-noise' by default: k is the number of clusters the run found).
CREATE OR REPLACE MACRO run_tags(run, tag_format, noise_format := 'k{k}-noise') AS TABLE
SELECT a.location_id,
       replace(replace(replace(replace(CASE WHEN a.cluster < 0 THEN noise_format ELSE tag_format END,
               '{k}', r.k::VARCHAR),
               '{cluster}', a.cluster::VARCHAR),
               '{run}', r.name),
               '{name}', coalesce(n.name, '')) AS tag
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
LEFT JOIN cluster_names n ON n.run_id = a.run_id AND n.cluster = a.cluster AND n.rank = 1
WHERE a.run_id = run;

-- The panorama each place of `map_name` was last fetched from ('ok' views): after a stale pano
-- id was refreshed by location, the new id.
CREATE OR REPLACE MACRO served_panos(map_name) AS TABLE
SELECT i.location_id, arg_max(i.pano_id, i.fetched_at) AS pano_id
FROM images i
SEMI JOIN (SELECT location_id FROM places WHERE map = map_name) p ON p.location_id = i.location_id
WHERE i.status = 'ok' AND i.pano_id IS NOT NULL
GROUP BY i.location_id;

-- One row per object of `map_name` in input order (every object, duplicates included): its
-- JSON, with `run`'s tag (its place's cluster) appended to extra.tags. Tags svcluster wrote in
-- an earlier export (svcluster_tags(): recorded per map in exported_tags) are dropped first, so
-- tags never pile up; every other tag is the user's and stays. With `refresh`, a pano id the
-- fetch found stale is replaced by the one it was refreshed to, where the object has it
-- (panoId and/or extra.panoId), in the file's encoding (hex stays hex, in its case).
-- With `outliers`, the objects of the run's outliers (cluster_outliers) also get the tag
-- 'outlier' after their cluster tag.
-- With `run` NULL and `refresh` false every object is the input's own text.
CREATE OR REPLACE MACRO export_locations(map_name, run, tag_format, refresh := false,
                                         noise_format := 'k{k}-noise', outliers := false) AS TABLE
WITH ours AS (
    SELECT coalesce(list(tag), []::VARCHAR[]) AS tags FROM svcluster_tags()
), objects AS (
    SELECT l.position, l.location_id, l.raw, t.tag, o.location_id IS NOT NULL AS outlier,
           coalesce(l.tags, []::VARCHAR[]) AS tags,
           ours.tags AS ours,
           CASE WHEN s.pano_id IS NOT NULL AND s.pano_id IS DISTINCT FROM l.pano_id_decoded THEN
               CASE WHEN l.pano_id = l.pano_id_decoded THEN s.pano_id
                    WHEN l.pano_id = upper(l.pano_id) THEN upper(hex(s.pano_id))
                    ELSE lower(hex(s.pano_id)) END
           END AS new_pano,
           l.pano_id AS old_pano
    FROM locations l
    CROSS JOIN ours
    LEFT JOIN run_tags(run, tag_format, noise_format := noise_format) t ON t.location_id = l.location_id
    LEFT JOIN (SELECT location_id FROM cluster_outliers WHERE run_id = run) o
           ON outliers AND o.location_id = l.location_id
    LEFT JOIN served_panos(map_name) s ON refresh AND s.location_id = l.location_id
    WHERE l.map = map_name
), patched AS (
    SELECT *,
           -- an object the run did not assign keeps its tags unless one is an earlier
           -- svcluster tag, which is dropped: it would be stale
           run IS NOT NULL AND (tag IS NOT NULL OR list_has_any(tags, ours)) AS retag
    FROM objects
)
SELECT position, location_id, tag, new_pano IS NOT NULL AS refreshed, outlier,
       CASE WHEN NOT retag AND new_pano IS NULL THEN raw
            ELSE json_merge_patch(json_merge_patch(
                     raw::JSON,
                     -- only extra.tags is patched (a nested merge patch keeps every other field)
                     CASE WHEN retag THEN json_object('extra', json_object('tags', to_json(list_concat(
                         list_filter(tags, lambda x: NOT list_contains(ours, x)),
                         CASE WHEN tag IS NULL THEN []::VARCHAR[] ELSE [tag] END,
                         CASE WHEN outlier THEN ['outlier'] ELSE []::VARCHAR[] END))))
                     ELSE '{}'::JSON END),
                     CASE WHEN new_pano IS NULL THEN '{}'::JSON
                          ELSE json_merge_patch(
                              CASE WHEN raw::JSON ->> 'panoId' = old_pano
                                   THEN json_object('panoId', new_pano) ELSE '{}'::JSON END,
                              CASE WHEN raw::JSON -> 'extra' ->> 'panoId' = old_pano
                                   THEN json_object('extra', json_object('panoId', new_pano)) ELSE '{}'::JSON END)
                     END)::VARCHAR
       END AS json
FROM patched
ORDER BY position;
