-- Places of $map ranked by cosine to a given vector $vector (FLOAT[]): the SQL form of a search
-- (docs/search.md). $model / $pooling / $precision pick the vector set; $top rows.
SELECT e.location_id, list_cosine_similarity(e.vector, $vector::FLOAT[]) AS score
FROM embeddings e
SEMI JOIN places p ON p.location_id = e.location_id AND p.map = $map
WHERE e.model = $model AND e.pooling = $pooling AND e.precision = $precision
ORDER BY score DESC, e.location_id
LIMIT $top;
