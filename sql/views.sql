-- The lake's tables as DuckDB views. Each table is a folder of Parquet files under
-- <lake_root>/tables/<table>/; rows are only ever added, and a row that supersedes another
-- has the same key and a later written_at, so the views keep the latest row per key.
-- Set the root first:  SET VARIABLE lake_root = '/path/to/lake';

CREATE OR REPLACE VIEW maps AS
SELECT * EXCLUDE (written_at), written_at AS ingested_at
FROM read_parquet(getvariable('lake_root') || '/tables/maps/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY map ORDER BY written_at DESC) = 1;

-- One keyed file per map, replaced whole on re-ingest: no superseded rows to hide.
CREATE OR REPLACE VIEW locations AS
SELECT * EXCLUDE (written_at), written_at AS ingested_at
FROM read_parquet(getvariable('lake_root') || '/tables/locations/*.parquet', union_by_name = true);

CREATE OR REPLACE VIEW images AS
SELECT * EXCLUDE (written_at), written_at AS fetched_at
FROM read_parquet(getvariable('lake_root') || '/tables/images/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY location_id, heading ORDER BY written_at DESC) = 1;

CREATE OR REPLACE VIEW embeddings AS
SELECT * EXCLUDE (written_at), written_at AS created_at
FROM read_parquet(getvariable('lake_root') || '/tables/embeddings/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY location_id, model, pooling, precision ORDER BY written_at DESC) = 1;

CREATE OR REPLACE VIEW embedding_views AS
SELECT * EXCLUDE (written_at), written_at AS created_at
FROM read_parquet(getvariable('lake_root') || '/tables/embedding_views/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY location_id, heading, model, precision ORDER BY written_at DESC) = 1;

-- A run is named MAP@vN: the Nth run of that map in creation order.
CREATE OR REPLACE VIEW cluster_runs AS
SELECT run_id, map,
       map || '@v' || row_number() OVER (PARTITION BY map ORDER BY created_at, run_id) AS name,
       * EXCLUDE (run_id, map, written_at)
FROM read_parquet(getvariable('lake_root') || '/tables/cluster_runs/*.parquet', union_by_name = true)
QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY written_at) = 1;

-- Assignments are written before their run row; only runs that were committed are shown.
CREATE OR REPLACE VIEW cluster_assignments AS
SELECT a.* EXCLUDE (written_at)
FROM read_parquet(getvariable('lake_root') || '/tables/cluster_assignments/*.parquet', union_by_name = true) a
SEMI JOIN read_parquet(getvariable('lake_root') || '/tables/cluster_runs/*.parquet', union_by_name = true) r
  ON r.run_id = a.run_id
QUALIFY row_number() OVER (PARTITION BY a.run_id, a.location_id ORDER BY a.written_at DESC) = 1;
