-- The vector set and size of run $run, and how many places its map $map has today (the result
-- svcluster run --grow shows for an assign run).
SELECT r.model, coalesce(r.pooling, 'mean') AS pooling, coalesce(r.precision, 'fp32') AS precision,
       coalesce(r.n_locations, 0) AS n_locations,
       (SELECT count(*) FROM places WHERE map = $map) AS map_places
FROM cluster_runs r
WHERE r.run_id = $run;
