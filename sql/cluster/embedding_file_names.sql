-- The embeddings table's files by the `file_index` the keys query reports.
SELECT file_index, filename
FROM read_parquet($files, union_by_name = true)
WHERE file_row_number = 0;
