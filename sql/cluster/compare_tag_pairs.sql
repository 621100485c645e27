-- A run's (location, cluster, tag) pairs against the map's own tags (cluster_tag_pairs).
SELECT location_id, cluster, tag FROM cluster_tag_pairs($run, $ignore) ORDER BY location_id, tag;
