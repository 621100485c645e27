-- Locations whose cluster number differs between two runs (cluster_movers in cluster/clusters.sql).
SELECT location_id, cluster_a, cluster_b, lat, lng, region_code, pano_id FROM cluster_movers($a, $b) LIMIT $limit;
