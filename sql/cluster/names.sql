-- Names for the clusters of a run: the best-matching curated descriptions (rank 1 = best),
-- scored against each cluster's centroid with the run model's text tower. Runs stay immutable:
-- names live in their own table, and naming a run again adds rows that win (latest per key).
CREATE OR REPLACE VIEW cluster_names AS
SELECT * EXCLUDE (written_at), written_at AS named_at
FROM lake_cluster_names;
