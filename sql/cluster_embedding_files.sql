-- The Parquet files holding the selected embedding rows.
SELECT DISTINCT filename FROM selected_embeddings ORDER BY filename;
