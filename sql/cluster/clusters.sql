-- Cluster runs as SQL: sizes, sweeps, comparisons between runs and with the map's own tags,
-- and the geography of each cluster. Views cover every committed run; filter by run_id (or
-- join cluster_runs and filter by name = 'MAP@vN'). Macros take the runs as run_ids.

-- Great-circle distance in km between two points given in degrees (mean Earth radius).
CREATE OR REPLACE MACRO haversine_km(lat1, lng1, lat2, lng2) AS
    2 * 6371.0088 * asin(least(1.0, sqrt(
        pow(sin(radians(lat2 - lat1) / 2), 2)
        + cos(radians(lat1)) * cos(radians(lat2)) * pow(sin(radians(lng2 - lng1) / 2), 2))));

-- The region a location counts in: its stateCode/subdivisionCode when the map has one, else the
-- lat/lng grid cell of `cell_deg` degrees named by its south-west corner ('cell -24,-70').
CREATE OR REPLACE MACRO location_region(region_code, lat, lng, cell_deg) AS
    coalesce(region_code,
             'cell ' || (floor(lat / cell_deg) * cell_deg)::DECIMAL(9, 3)::DOUBLE::VARCHAR
             || ',' || (floor(lng / cell_deg) * cell_deg)::DECIMAL(9, 3)::DOUBLE::VARCHAR);

-- Every run with its parameters and metrics, newest last (what `svcluster runs` prints).
-- Inertia and silhouette are measured in the clustered space: the PCA space when pca_dims is set.
-- nonempty_clusters < k: the input was degenerate (fewer distinct vectors than k; `warnings`).
-- `stale`: the run was made on an earlier version of its map, which was re-ingested with other
-- content since (the map file's checksum recorded with the run is not the map's now; a run
-- recorded before runs kept it counts as stale when the map was ingested after the run).
-- Lineage: `method` is how the run was made (cluster: fitted; assign: the places added since its
-- parent got the parent's nearest centroid), `parent_run_id` / `parent_name` the run it grew from.
CREATE OR REPLACE VIEW cluster_run_list AS
SELECT r.name, r.run_id, r.map, r.model, r.pooling, r.precision, r.algorithm, r.k, r.pca_dims,
       r.seed, try_cast(json_extract_string(r.params, '$.n_init') AS INTEGER) AS n_init,
       try_cast(json_extract_string(r.params, '$.max_iter') AS INTEGER) AS max_iter,
       r.pca_explained_variance, r.n_locations,
       coalesce(r.nonempty_clusters,
                len(list_filter(try_cast(r.sizes AS BIGINT[]), lambda n: n > 0))) AS nonempty_clusters,
       r.inertia, r.silhouette, p.name AS aligned_to_name, r.sweep_id, r.warnings,
       coalesce(r.method, 'cluster') AS method, r.parent_run_id, parent.name AS parent_name,
       coalesce(r.map_sha256 <> m.file_sha256, r.map_sha256 IS NULL AND r.created_at < m.ingested_at,
                false) AS stale,
       r.map_sha256, r.created_at
FROM cluster_runs r
LEFT JOIN cluster_runs p ON p.run_id = r.aligned_to
LEFT JOIN cluster_runs parent ON parent.run_id = r.parent_run_id
LEFT JOIN maps m ON m.map = r.map
ORDER BY r.map, r.created_at, r.run_id;

-- Runs that differ only in k share a sweep_id: the k sweep as a table (inertia, silhouette per k).
CREATE OR REPLACE VIEW cluster_sweep AS
SELECT sweep_id, map, model, pooling, precision, algorithm, pca_dims, seed, k, name, run_id,
       n_locations, inertia, silhouette
FROM cluster_runs
ORDER BY sweep_id, k, created_at;

-- Locations per cluster of each run.
CREATE OR REPLACE VIEW cluster_sizes AS
SELECT run_id, cluster, count(*) AS size
FROM cluster_assignments
GROUP BY run_id, cluster
ORDER BY run_id, cluster;

-- Every assigned place of every run, with where it is (its first object's point) and every
-- tag its objects carry.
CREATE OR REPLACE VIEW cluster_points AS
SELECT a.run_id, r.map, a.location_id, a.cluster, a.distance, l.lat, l.lng, l.country_code,
       l.region_code, l.tags, l.pano_id
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
JOIN places l ON l.map = r.map AND l.location_id = a.location_id;

-- Per run and cluster: size, share of the run, geographic centroid (mean of the points as unit
-- vectors on the sphere, so it is right across the antimeridian too) and the median and
-- maximum great-circle distance of its locations to that centroid.
CREATE OR REPLACE VIEW cluster_geography AS
WITH sums AS (
    SELECT run_id, cluster, count(*) AS size,
           avg(cos(radians(lat)) * cos(radians(lng))) AS x,
           avg(cos(radians(lat)) * sin(radians(lng))) AS y,
           avg(sin(radians(lat))) AS z
    FROM cluster_points
    GROUP BY run_id, cluster
), centroids AS (
    SELECT run_id, cluster, size,
           size / sum(size) OVER (PARTITION BY run_id) AS share,
           degrees(atan2(z, sqrt(x * x + y * y))) AS centroid_lat,
           degrees(atan2(y, x)) AS centroid_lng
    FROM sums
)
SELECT c.run_id, c.cluster, c.size, c.share, c.centroid_lat, c.centroid_lng,
       median(haversine_km(p.lat, p.lng, c.centroid_lat, c.centroid_lng)) AS median_km_to_centroid,
       max(haversine_km(p.lat, p.lng, c.centroid_lat, c.centroid_lng)) AS max_km_to_centroid
FROM centroids c
JOIN cluster_points p ON p.run_id = c.run_id AND p.cluster = c.cluster
GROUP BY c.run_id, c.cluster, c.size, c.share, c.centroid_lat, c.centroid_lng
ORDER BY c.run_id, c.cluster;

-- Per run and region: how many of its locations the dominant cluster holds. Regions are
-- region codes where the map has them, else grid cells of `cell_deg` degrees. Ties between
-- clusters go to the lower cluster number.
CREATE OR REPLACE MACRO cluster_region_share_at(cell_deg) AS TABLE
WITH counts AS (
    SELECT run_id, location_region(region_code, lat, lng, cell_deg) AS region, cluster,
           count(*) AS n
    FROM cluster_points
    GROUP BY ALL
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY run_id, region ORDER BY n DESC, cluster) AS rank,
           (sum(n) OVER (PARTITION BY run_id, region))::BIGINT AS locations,
           count(*) OVER (PARTITION BY run_id, region) AS clusters
    FROM counts
)
SELECT run_id, region, locations, cluster AS dominant_cluster, n AS dominant_locations,
       n / locations AS dominant_share, clusters
FROM ranked
WHERE rank = 1
ORDER BY run_id, region;

-- The same with 1-degree grid cells for maps without region codes.
CREATE OR REPLACE VIEW cluster_region_share AS
SELECT * FROM cluster_region_share_at(1.0);

-- Locations both runs assigned, with their cluster in each.
CREATE OR REPLACE MACRO cluster_pairs(run_a, run_b) AS TABLE
SELECT a.location_id, a.cluster AS cluster_a, b.cluster AS cluster_b
FROM cluster_assignments a
JOIN cluster_assignments b ON b.location_id = a.location_id AND b.run_id = run_b
WHERE a.run_id = run_a;

-- The contingency table of two runs: how many locations cluster_a of run_a and cluster_b of
-- run_b share (only non-zero cells).
CREATE OR REPLACE MACRO cluster_contingency(run_a, run_b) AS TABLE
SELECT cluster_a, cluster_b, count(*) AS locations
FROM cluster_pairs(run_a, run_b)
GROUP BY cluster_a, cluster_b
ORDER BY cluster_a, cluster_b;

-- Locations whose cluster number (and so whose exported tag) differs between the two runs, with
-- where they are (lat, lng, region, and the pano id a Street View link opens).
CREATE OR REPLACE MACRO cluster_movers(run_a, run_b) AS TABLE
SELECT p.location_id, p.cluster_a, p.cluster_b, l.lat, l.lng, l.region_code, l.pano_id
FROM cluster_pairs(run_a, run_b) p
JOIN cluster_points l ON l.run_id = run_b AND l.location_id = p.location_id
WHERE p.cluster_a <> p.cluster_b
ORDER BY p.cluster_a, p.cluster_b, p.location_id;

-- A run against the map's own tags (human categories). Each distinct tag of a location counts
-- as one (location, tag) pair, so a location with two tags sits in two rows; tags svcluster
-- itself exported (svcluster_tags()) are left out, and so are tags matching `ignore_pattern`
-- (NULL: none) and untagged locations.
CREATE OR REPLACE MACRO cluster_tag_pairs(run, ignore_pattern) AS TABLE
SELECT location_id, cluster, tag
FROM (SELECT location_id, cluster, unnest(list_distinct(tags)) AS tag
      FROM cluster_points
      WHERE run_id = run AND tags IS NOT NULL)
WHERE tag NOT IN (SELECT tag FROM svcluster_tags())
  AND (ignore_pattern IS NULL OR NOT regexp_full_match(tag, ignore_pattern));

CREATE OR REPLACE MACRO cluster_tag_contingency(run, ignore_pattern) AS TABLE
SELECT cluster, tag, count(*) AS locations
FROM cluster_tag_pairs(run, ignore_pattern)
GROUP BY cluster, tag
ORDER BY cluster, tag;
