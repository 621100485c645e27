-- The embedding rows a clustering of one map reads: per location of the map its latest row of
-- (model, pooling, precision), located by file and row number so that the vectors can be read
-- in a second pass without carrying them through the dedup. `pos` is the row's place in the
-- matrix: locations sorted by location_id (a canonical order, whatever the files' order).
CREATE OR REPLACE TEMP TABLE selected_embeddings AS
SELECT row_number() OVER (ORDER BY location_id) - 1 AS pos, *
FROM (
    SELECT location_id, filename, file_row_number, dim, epoch_us(written_at) AS written_us,
           coalesce(model_revision, '') AS model_revision
    FROM read_parquet(getvariable('lake_root') || '/tables/embeddings/*.parquet',
                      union_by_name = true, filename = true, file_row_number = true)
    WHERE model = $model AND pooling = $pooling AND precision = $precision
      AND location_id IN (SELECT location_id FROM locations WHERE map = $map)
    QUALIFY row_number() OVER (PARTITION BY location_id ORDER BY written_at DESC) = 1
);
