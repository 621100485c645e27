-- The lake's tables as DuckDB views. Each table is a Delta table under <lake_root>/tables/<table>/;
-- lake_<table> reads the Parquet files of its current version (svcluster defines it on every
-- connection; svcluster.sql from the Delta log). Writes merge on each table's key, so every key
-- is one row: no view needs a latest-row rule.

CREATE OR REPLACE VIEW maps AS
SELECT * EXCLUDE (written_at), written_at AS ingested_at
FROM lake_maps;

-- A map's rows are replaced whole on re-ingest (one commit).
CREATE OR REPLACE VIEW locations AS
SELECT * EXCLUDE (written_at), written_at AS ingested_at
FROM lake_locations;

-- One row per place of a map: the objects on one panorama (or, without a pano id, on the same
-- rounded coordinates) share a location_id and are fetched, embedded and clustered once.
-- position, lat, lng are the first object's; pano_id is the id requests use (decoded).
CREATE OR REPLACE VIEW places AS
SELECT map, location_id, min(position) AS position,
       arg_min(lat, position) AS lat, arg_min(lng, position) AS lng,
       arg_min(pano_id_decoded, position) AS pano_id,
       arg_min(country_code, position) AS country_code, arg_min(region_code, position) AS region_code,
       -- every tag any object of the place carries (NULL when none has extra.tags)
       list_distinct(flatten(list(tags ORDER BY position) FILTER (WHERE tags IS NOT NULL))) AS tags,
       count(*) AS objects
FROM locations
GROUP BY map, location_id;

-- A view is a place, heading and view settings (width, height, fov, pitch): a fetch at another
-- size, fov or pitch adds views, it does not replace them. Rows written before the settings were
-- part of the key may lack them: null width/height/fov/pitch read as the defaults 640x640, fov 90,
-- pitch 0 (the only settings such a row can have been written with when its columns are empty).
CREATE OR REPLACE VIEW images AS
SELECT * EXCLUDE (written_at) REPLACE (
           coalesce(width, 640)::INTEGER AS width, coalesce(height, 640)::INTEGER AS height,
           coalesce(fov, 90)::DOUBLE AS fov, coalesce(pitch, 0)::DOUBLE AS pitch),
       written_at AS fetched_at
FROM lake_images;

CREATE OR REPLACE VIEW embeddings AS
SELECT * EXCLUDE (written_at), written_at AS created_at
FROM lake_embeddings;

CREATE OR REPLACE VIEW embedding_views AS
SELECT * EXCLUDE (written_at), written_at AS created_at
FROM lake_embedding_views;

-- A run is named MAP@vN: the Nth run of that map in creation order.
CREATE OR REPLACE VIEW cluster_runs AS
SELECT run_id, map,
       map || '@v' || row_number() OVER (PARTITION BY map ORDER BY created_at, run_id) AS name,
       * EXCLUDE (run_id, map, written_at, assignments, duplicates)
FROM lake_cluster_runs;

-- A run's assignments are a column of its row (one commit: readers see a run with all its
-- assignments or not at all); each row of cluster_runs' files is its own row group, so a filter on
-- run_id decodes only that run's list.
CREATE OR REPLACE VIEW cluster_assignments AS
SELECT run_id, unnest(assignments, recursive := true)
FROM lake_cluster_runs;

-- What each fetch (or folder import) of a map asked for, per view settings: the headings embed
-- pools for the map at those settings; the map's latest row holds the settings it pools by default.
CREATE OR REPLACE VIEW map_views AS
SELECT * EXCLUDE (written_at), written_at AS fetched_at
FROM lake_map_views;

-- Near-identical pairs of places found within the clusters of a run (written with the run, in
-- its row). See duplicate_panoramas.
CREATE OR REPLACE VIEW cluster_duplicates AS
SELECT run_id, unnest(duplicates, recursive := true)
FROM lake_cluster_runs;

-- Every tag an export wrote into a map (one row per map and tag): the tags that are
-- svcluster's own. An export removes these and only these before adding its own.
CREATE OR REPLACE VIEW exported_tags AS
SELECT * EXCLUDE (written_at), written_at AS exported_at
FROM lake_exported_tags;

-- The tags svcluster wrote into any map of this lake (a map re-imported from an export carries
-- them under another name too).
CREATE OR REPLACE MACRO svcluster_tags() AS TABLE
SELECT DISTINCT tag FROM exported_tags;

-- Every search / similar request (tasks/search/step.py): the query, the vector set and the places
-- found with their scores, best first.
CREATE OR REPLACE VIEW searches AS
SELECT * EXCLUDE (written_at)
FROM lake_searches;

-- The report's atlas: 2-D coordinates of each place of a vector set (tasks/report/atlas.py).
CREATE OR REPLACE VIEW projections AS
SELECT * EXCLUDE (written_at), written_at AS projected_at
FROM lake_projections;
