-- The Parquet files holding the selected embedding rows (`selected_embeddings`: the rows'
-- files and row numbers with their matrix row `pos`, registered from Python).
SELECT DISTINCT filename FROM selected_embeddings ORDER BY 1;
