"""Cluster: versioned runs over a map's vectors (K-means, assign to a run's centroids), the
runs' names and resolution, comparisons between runs and with a map's tags, cluster names."""
