-- The cluster of each location in both runs (for ARI and NMI).
SELECT cluster_a, cluster_b FROM cluster_pairs($a, $b);
