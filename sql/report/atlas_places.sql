-- The first object of each place run $run assigned, as the atlas's download writes it back for
-- map-making.app: camera (heading, pitch, zoom) and the pano id as the map file had it.
SELECT a.location_id,
       arg_min(l.heading, l.position) AS heading, arg_min(l.pitch, l.position) AS pitch,
       arg_min(l.zoom, l.position) AS zoom, arg_min(l.pano_id, l.position) AS pano_id
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
JOIN locations l ON l.map = r.map AND l.location_id = a.location_id
WHERE a.run_id = $run
GROUP BY a.location_id;
