-- The embedding rows of (model, pooling, precision) for the locations of one map, located by
-- file (`file_index`, see cluster/embedding_file_names.sql) and row number so that the vectors
-- can be read in a second pass without carrying them through any sort. Sorted by location_id:
-- the matrix's canonical row order, whatever order the files have. A location embedded more
-- than once has several rows here; the caller keeps its latest (a plain sort of a few narrow
-- columns is much cheaper than a grouped dedup, and such repeats are rare).
SELECT location_id, dim, epoch_us(written_at) AS written_us, file_index, file_row_number
FROM read_parquet(getvariable('lake_root') || '/tables/embeddings/*.parquet', union_by_name = true)
WHERE model = $model AND pooling = $pooling AND precision = $precision
  AND location_id IN (SELECT location_id FROM locations WHERE map = $map)
ORDER BY location_id;
