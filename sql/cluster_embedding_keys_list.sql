-- The selected embedding rows in matrix order (see cluster_embedding_keys.sql).
SELECT location_id, dim, written_us, model_revision FROM selected_embeddings ORDER BY pos;
