-- The contingency table of two runs (cluster_contingency in clusters.sql).
SELECT cluster_a, cluster_b, locations FROM cluster_contingency($a, $b);
