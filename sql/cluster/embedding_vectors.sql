-- The selected vectors with their matrix row (`pos`), read only from the files that hold them.
-- Matching the location too means a file list that changed in between (a compaction) can only
-- make rows go missing, which the caller reports, never put a wrong vector in a row.
SELECT s.pos, e.vector
FROM read_parquet($files, union_by_name = true, filename = true, file_row_number = true) e
JOIN selected_embeddings s
  ON s.filename = e.filename AND s.file_row_number = e.file_row_number AND s.location_id = e.location_id;
