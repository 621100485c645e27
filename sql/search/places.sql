-- The places a search found ($ids, in any order), with their coordinates, pano id and cluster
-- in the latest run of their map ($map NULL: any map holding the place; the first map by name).
WITH latest AS (
    SELECT map, arg_max(run_id, (created_at, run_id)) AS run_id, arg_max(name, (created_at, run_id)) AS run
    FROM cluster_runs
    GROUP BY map
)
SELECT p.location_id, arg_min(p.map, p.map) AS map,
       arg_min(p.lat, p.map) AS lat, arg_min(p.lng, p.map) AS lng, arg_min(p.pano_id, p.map) AS pano_id,
       arg_min(a.cluster, p.map) AS cluster, arg_min(l.run, p.map) AS run
FROM places p
LEFT JOIN latest l ON l.map = p.map
LEFT JOIN cluster_assignments a ON a.run_id = l.run_id AND a.location_id = p.location_id
WHERE list_contains($ids, p.location_id) AND ($map IS NULL OR p.map = $map)
GROUP BY p.location_id;
