-- The embeddings a run clustered (same model, pooling and precision as the run), one per
-- assigned location, with its cluster. A run that recorded no pooling/precision takes any,
-- preferring mean pooling and fp32.
SELECT a.location_id, a.cluster, e.vector
FROM cluster_assignments a
JOIN cluster_runs r ON r.run_id = a.run_id
JOIN embeddings e
  ON e.location_id = a.location_id
 AND e.model = r.model
 AND (r.pooling IS NULL OR e.pooling = r.pooling)
 AND (r.precision IS NULL OR e.precision = r.precision)
WHERE a.run_id = $run
QUALIFY row_number() OVER (PARTITION BY a.location_id
                           ORDER BY e.pooling = 'mean' DESC, e.precision = 'fp32' DESC, e.pooling, e.precision) = 1
ORDER BY a.location_id;
