-- The embeddings a run clustered (same model, pooling and precision as the run; a run that
-- recorded no pooling/precision used the defaults, mean and fp32), one per assigned location,
-- with its cluster, in location_id order.
SELECT a.location_id, a.cluster, e.vector
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
JOIN embeddings e
  ON e.location_id = a.location_id
 AND e.model = r.model
 AND e.pooling = coalesce(r.pooling, 'mean')
 AND e.precision = coalesce(r.precision, 'fp32')
WHERE a.run_id = $run
ORDER BY a.location_id;
