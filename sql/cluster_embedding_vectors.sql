-- The selected vectors with their matrix row (`pos`), read only from the files that hold them.
SELECT s.pos, e.vector
FROM read_parquet($files, union_by_name = true, filename = true, file_row_number = true) e
JOIN selected_embeddings s ON s.filename = e.filename AND s.file_row_number = e.file_row_number;
