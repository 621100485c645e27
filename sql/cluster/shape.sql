-- The shape of a map's embeddings, as SQL: how the clusters of a sweep split from one k to the
-- next (cluster_lineage), the places far out of their cluster (cluster_outliers) and places whose
-- embeddings are near-identical though their panoramas differ (duplicate_panoramas). See
-- docs/clustering.md.

-- Outliers of every committed run: places farther from their cluster's centroid than the
-- cluster's upper Tukey fence, q3 + `factor` x (q3 - q1) of its places' distances (in the
-- clustered space: the PCA space when the run used PCA). `relative_distance` is the distance as
-- a share of the cluster's spread, its median distance (1 = a typical place). Clusters of fewer
-- than 5 places have no outliers (their quartiles say nothing); HDBSCAN's noise (cluster -1)
-- is not a cluster and has none either. `rank_in_cluster` and `rank_in_run` order the outliers
-- by relative distance, farthest first, within their cluster and over the whole run.
CREATE OR REPLACE MACRO cluster_outliers_at(factor) AS TABLE
WITH spread AS (
    SELECT run_id, cluster, count(*) AS cluster_size,
           quantile_cont(distance, 0.25) AS q1,
           median(distance) AS median_distance,
           quantile_cont(distance, 0.75) AS q3
    FROM cluster_assignments
    WHERE cluster >= 0 AND distance IS NOT NULL
    GROUP BY run_id, cluster
    HAVING count(*) >= 5
), flagged AS (
    SELECT a.run_id, r.map, r.name, a.location_id, a.cluster, a.distance, s.cluster_size,
           s.median_distance, s.q3 + factor * (s.q3 - s.q1) AS fence,
           a.distance / nullif(s.median_distance, 0) AS relative_distance
    FROM cluster_assignments a
    JOIN spread s ON s.run_id = a.run_id AND s.cluster = a.cluster
    JOIN cluster_runs r ON r.run_id = a.run_id
    WHERE a.distance > s.q3 + factor * (s.q3 - s.q1)
)
SELECT run_id, map, name, location_id, cluster, distance, relative_distance, median_distance,
       fence, cluster_size,
       row_number() OVER (PARTITION BY run_id, cluster ORDER BY relative_distance DESC, location_id) AS rank_in_cluster,
       row_number() OVER (PARTITION BY run_id ORDER BY relative_distance DESC, location_id) AS rank_in_run
FROM flagged
ORDER BY run_id, rank_in_run;

-- The outliers with Tukey's factor 1.5 (what `svcluster export RUN --tag-outliers` tags).
CREATE OR REPLACE VIEW cluster_outliers AS
SELECT * FROM cluster_outliers_at(1.5);

-- How the clusters split from one k to the next. A sweep is the runs of a map that share a
-- sweep_id: the same vectors (map version, model, pooling, precision, input fingerprint, PCA,
-- seed) and the same algorithm and parameters, k the only difference, whether they were made
-- by one `--k 5,18` or by separate commands. Ordered by k, each run is paired with the next
-- (k_coarse < k_fine; two runs of one k are paired in creation order), and each row says how
-- many places of cluster_coarse went to cluster_fine, and what share of cluster_coarse that is.
-- Runs without a sweep_id (assign runs) are in no sweep; HDBSCAN's noise (-1) is a cluster here.
CREATE OR REPLACE VIEW cluster_lineage AS
WITH steps AS (
    SELECT run_id, map, name, k, sweep_id,
           row_number() OVER (PARTITION BY sweep_id ORDER BY k, created_at, run_id) AS step
    FROM cluster_runs
    WHERE sweep_id IS NOT NULL
), pairs AS (
    SELECT c.map, c.sweep_id, c.run_id AS run_coarse, c.name AS name_coarse, c.k AS k_coarse,
           f.run_id AS run_fine, f.name AS name_fine, f.k AS k_fine
    FROM steps c
    JOIN steps f ON f.sweep_id = c.sweep_id AND f.step = c.step + 1
), flows AS (
    SELECT p.map, p.sweep_id, p.run_coarse, p.name_coarse, p.k_coarse, a.cluster AS cluster_coarse,
           p.run_fine, p.name_fine, p.k_fine, b.cluster AS cluster_fine, count(*) AS places
    FROM pairs p
    JOIN cluster_assignments a ON a.run_id = p.run_coarse
    JOIN cluster_assignments b ON b.run_id = p.run_fine AND b.location_id = a.location_id
    GROUP BY ALL
)
SELECT map, sweep_id, run_coarse, name_coarse, k_coarse, cluster_coarse,
       run_fine, name_fine, k_fine, cluster_fine, places,
       places / sum(places) OVER (PARTITION BY run_coarse, run_fine, cluster_coarse) AS share_of_coarse
FROM flows
ORDER BY map, sweep_id, k_coarse, run_coarse, cluster_coarse, places DESC, cluster_fine;

-- Pairs of places of a run whose embeddings are near-identical (cosine >= 0.995 of the
-- L2-normalised embeddings: tasks/cluster/duplicates.py) although their panoramas differ: the
-- same spot covered twice, or a copy. A place's panorama is its map's pano id, else the one the
-- fetch was served; a pair is kept unless both are known and equal. Only pairs within one cluster
-- of the run are compared (HDBSCAN's noise is one group): near-identical vectors fall in the
-- same cluster except across a border, and comparing every pair of a map would be O(n^2).
-- `cluster` is the cluster both are in, `km` how far apart they are.
CREATE OR REPLACE VIEW duplicate_panoramas AS
WITH pairs AS (
    SELECT d.run_id, r.map, r.name, d.location_a, d.location_b, d.cosine
    FROM cluster_duplicates d
    JOIN cluster_runs r ON r.run_id = d.run_id
), served AS (
    SELECT i.location_id, arg_max(i.pano_id, i.fetched_at) AS pano_id
    FROM images i
    SEMI JOIN (SELECT location_a AS location_id FROM pairs UNION SELECT location_b FROM pairs) p
      ON p.location_id = i.location_id
    WHERE i.status = 'ok' AND i.pano_id IS NOT NULL
    GROUP BY i.location_id
), sides AS (
    SELECT p.*, a.cluster,
           coalesce(pa.pano_id, sa.pano_id) AS pano_a, coalesce(pb.pano_id, sb.pano_id) AS pano_b,
           pa.lat AS lat_a, pa.lng AS lng_a, pb.lat AS lat_b, pb.lng AS lng_b
    FROM pairs p
    JOIN cluster_assignments a ON a.run_id = p.run_id AND a.location_id = p.location_a
    LEFT JOIN places pa ON pa.map = p.map AND pa.location_id = p.location_a
    LEFT JOIN places pb ON pb.map = p.map AND pb.location_id = p.location_b
    LEFT JOIN served sa ON sa.location_id = p.location_a
    LEFT JOIN served sb ON sb.location_id = p.location_b
)
SELECT run_id, map, name, cluster, location_a, location_b, pano_a, pano_b, cosine,
       haversine_km(lat_a, lng_a, lat_b, lng_b) AS km, lat_a, lng_a, lat_b, lng_b
FROM sides
WHERE pano_a IS NULL OR pano_b IS NULL OR pano_a <> pano_b
ORDER BY run_id, cosine DESC, location_a, location_b;
