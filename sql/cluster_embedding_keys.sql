-- The embedding rows a clustering of one map reads: per location of the map its latest row of
-- (model, pooling, precision), located by file and row number so that the vectors can be read
-- in a second pass without carrying them through the dedup (a hash aggregate, no window).
-- Sorted by location_id: the matrix's canonical row order, whatever order the files have.
WITH latest AS (
    SELECT location_id, max(written_at) AS written_at,
           arg_max({'filename': filename, 'row': file_row_number, 'dim': dim,
                    'revision': coalesce(model_revision, '')}, written_at) AS row
    FROM read_parquet(getvariable('lake_root') || '/tables/embeddings/*.parquet',
                      union_by_name = true, filename = true, file_row_number = true)
    WHERE model = $model AND pooling = $pooling AND precision = $precision
      AND location_id IN (SELECT location_id FROM locations WHERE map = $map)
    GROUP BY location_id
)
SELECT location_id, row.dim AS dim, epoch_us(written_at) AS written_us, row.revision AS model_revision,
       row.filename AS filename, row.row AS file_row_number
FROM latest
ORDER BY location_id;
