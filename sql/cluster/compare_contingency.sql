-- The contingency table of two runs (cluster_contingency in cluster/clusters.sql).
SELECT cluster_a, cluster_b, locations FROM cluster_contingency($a, $b);
