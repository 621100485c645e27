-- A run's clusters against the map's own tags (cluster_tag_contingency in cluster/clusters.sql).
SELECT cluster, tag, locations FROM cluster_tag_contingency($run, $ignore);
