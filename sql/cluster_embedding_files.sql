-- The Parquet files holding the selected embedding rows (`selected_embeddings`: the keys of
-- cluster_embedding_keys.sql with their matrix row `pos`, registered from Python).
SELECT DISTINCT filename FROM selected_embeddings ORDER BY 1;
