-- $files: the embeddings table's current Parquet files (lake_files).
-- The embedding rows of (model, pooling, precision) for the locations of one map, located by
-- file (`file_index`, see cluster/embedding_file_names.sql) and row number so that the vectors
-- can be read in a second pass without carrying them through any sort. Sorted by location_id:
-- the matrix's canonical row order, whatever order the files have. Embeddings are merged on
-- their key, so a location has one row here (the caller still keeps the latest of any repeat).
SELECT location_id, dim, epoch_us(written_at) AS written_us, file_index, file_row_number
FROM read_parquet($files, union_by_name = true)
WHERE model = $model AND pooling = $pooling AND precision = $precision
  AND location_id IN (SELECT location_id FROM locations WHERE map = $map)
ORDER BY location_id;
