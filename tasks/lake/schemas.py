"""The lake's tables: their Arrow schemas and keys. The contract (docs/lake.md), in one place.

Every table is a Delta Lake table under ``tables/<name>/`` (``tasks/lake/delta.py``). A write
merges its rows on the table's key: a row with a key already there replaces it, so every write is
idempotent, and each write is one commit, so a crash leaves the table as it was before the write.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its name, its key columns and its Arrow schema (vector sizes may vary).
    ``immutable``: a row once written is never replaced (a write of its key again adds nothing).
    ``rows_per_group``: the most rows a Parquet row group holds (None: the writer's default); a
    table of large nested rows keeps few per group, so a query of one row decodes only its own."""

    name: str
    key: tuple[str, ...]
    schema: pa.Schema
    immutable: bool = False
    rows_per_group: int | None = None


def nested_list(kind: pa.StructType, rows: pa.Table | None, offsets: list[int]) -> pa.ListArray:
    """A list<``kind``> column: list i holds ``rows[offsets[i]:offsets[i + 1]]`` (the fields of
    ``kind`` taken from the columns of the same names); no rows: every list empty."""
    fields = list(kind)
    columns = [pa.array([], f.type) if rows is None else rows.column(f.name).combine_chunks().cast(f.type) for f in fields]
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.StructArray.from_arrays(columns, fields=fields))


def vector_type(dim: int) -> pa.DataType:
    """The Arrow type of an embedding: a fixed-size list of float32 (read back as FLOAT[])."""
    return pa.list_(pa.float32(), dim)


MAPS = TableSpec(
    "maps",
    ("map",),
    pa.schema(
        [
            ("map", pa.string()),
            ("source_file", pa.string()),
            ("format", pa.string()),  # array | customCoordinates
            ("dialect", pa.string()),  # geoguessr | map-generator | map-making.app | vali
            ("envelope", pa.string()),  # top-level object minus customCoordinates (JSON) or null
            ("location_count", pa.int64()),  # objects in the file, duplicates included
            ("duplicates", pa.int64()),  # objects that are exact copies of an earlier one
            ("place_count", pa.int64()),  # distinct places (panoramas, else rounded coordinates)
            ("shared_place_objects", pa.int64()),  # other objects on an earlier object's place
            ("file_sha256", pa.string()),
            ("written_at", TIMESTAMP),
        ]
    ),
)

# One row per input object (duplicates included); location_id names the object's place.
LOCATIONS = TableSpec(
    "locations",
    ("map", "position"),
    pa.schema(
        [
            ("map", pa.string()),
            ("location_id", pa.string()),
            ("position", pa.int64()),  # index in the input file (input order)
            ("lat", pa.float64()),
            ("lng", pa.float64()),
            ("heading", pa.float64()),
            ("pitch", pa.float64()),
            ("zoom", pa.float64()),
            ("pano_id", pa.string()),  # panoId, or extra.panoId when panoId is null, as written
            ("pano_id_decoded", pa.string()),  # what requests use (GeoGuessr's hex form decoded)
            ("pano_id_field", pa.string()),  # panoId | extra.panoId: where the file has it
            ("country_code", pa.string()),
            ("region_code", pa.string()),  # stateCode or subdivisionCode
            ("tags", pa.list_(pa.string())),  # extra.tags as given
            ("extra", pa.string()),  # the extra object as JSON
            ("raw", pa.string()),  # the whole input object as JSON (lossless)
            ("written_at", TIMESTAMP),
        ]
    ),
)

# A view is (place, heading, view settings): the same place and heading at another size, fov or
# pitch is another view. Rows written before that may have null width/height (no_imagery and
# failed rows did not record them): the views read them as 640x640, fov 90, pitch 0.
IMAGES = TableSpec(
    "images",
    ("location_id", "heading", "width", "height", "fov", "pitch"),
    pa.schema(
        [
            ("location_id", pa.string()),
            ("heading", pa.int32()),
            ("status", pa.string()),  # ok | no_imagery | skipped (--official-only) | failed
            ("reason", pa.string()),  # why not ok; on an ok row, that its bytes came from an earlier view
            ("pano_id", pa.string()),  # the panorama served (a refreshed id when the asked one was deleted)
            ("capture_date", pa.string()),  # the metadata's date as given: YYYY-MM, YYYY or null
            ("path", pa.string()),  # blob path relative to the lake root
            ("size_bytes", pa.int64()),
            ("sha256", pa.string()),
            ("width", pa.int32()),  # the size asked for (api; every status) or the file's (folder)
            ("height", pa.int32()),
            ("fov", pa.float64()),
            ("pitch", pa.float64()),
            ("source", pa.string()),  # api | folder
            ("written_at", TIMESTAMP),
            # Added for real maps and the real API (null in rows written before):
            ("requested_pano_id", pa.string()),  # the id asked for; differs from pano_id when refreshed
            ("copyright", pa.string()),  # the metadata's owner: "© Google" or a photosphere's author
            ("official", pa.bool_()),  # Google's own coverage: the copyright names Google alone
            ("pano_lat", pa.float64()),  # where the panorama stands, by its metadata
            ("pano_lng", pa.float64()),
        ]
    ),
)

EMBEDDINGS = TableSpec(
    "embeddings",
    ("location_id", "model", "pooling", "precision"),
    pa.schema(
        [
            ("location_id", pa.string()),
            ("model", pa.string()),
            ("pooling", pa.string()),  # mean | stitched
            ("precision", pa.string()),  # fp32 | bf16 | fp16 | int8 | int8-static
            ("vector", pa.list_(pa.float32())),  # written as vector_type(dim)
            ("dim", pa.int32()),
            ("view_count", pa.int32()),
            ("model_revision", pa.string()),
            ("written_at", TIMESTAMP),
            # The view settings of the views pooled, e.g. '640x640/fov90/pitch0' (null in rows
            # written before: read as that default); other settings make embed recompute it.
            ("view_settings", pa.string()),
        ]
    ),
)

EMBEDDING_VIEWS = TableSpec(
    "embedding_views",
    ("location_id", "heading", "view_settings", "model", "precision"),
    pa.schema(
        [
            ("location_id", pa.string()),
            ("heading", pa.int32()),
            ("model", pa.string()),
            ("precision", pa.string()),
            ("vector", pa.list_(pa.float32())),
            ("image_sha256", pa.string()),
            ("model_revision", pa.string()),
            ("written_at", TIMESTAMP),
            ("view_settings", pa.string()),  # the view's size, fov, pitch (as in embeddings); null: the default
        ]
    ),
)

# A run's assignments and near-duplicate pairs are columns of its row, not tables of their own: a
# Delta commit covers one table, and a run must be seen with all its assignments or not at all.
# The views cluster_assignments and cluster_duplicates unnest them (sql/lake/views.sql).
ASSIGNMENT = pa.struct(
    [
        ("location_id", pa.string()),
        ("cluster", pa.int32()),  # -1: noise (HDBSCAN)
        ("distance", pa.float32()),  # to the cluster's centroid
    ]
)
# Pairs of places of one run whose embeddings are near-identical (cosine >= 0.995), found within
# each of its clusters by the cluster step (tasks/cluster/duplicates.py).
DUPLICATE_PAIR = pa.struct(
    [
        ("location_a", pa.string()),  # location_a < location_b
        ("location_b", pa.string()),
        ("cosine", pa.float32()),  # of the two L2-normalised embeddings (not the PCA space)
    ]
)

CLUSTER_RUNS = TableSpec(
    "cluster_runs",
    ("run_id",),
    pa.schema(
        [
            ("run_id", pa.string()),
            ("map", pa.string()),
            ("model", pa.string()),
            ("pooling", pa.string()),
            ("precision", pa.string()),
            ("algorithm", pa.string()),
            ("k", pa.int32()),
            ("pca_dims", pa.int32()),
            ("seed", pa.int64()),
            ("params", pa.string()),  # every parameter as JSON
            ("fingerprint", pa.string()),  # of the input embeddings
            ("n_locations", pa.int64()),
            ("inertia", pa.float64()),
            ("silhouette", pa.float64()),
            ("sweep_id", pa.string()),
            ("aligned_to", pa.string()),  # run whose cluster numbers this run's were matched to
            ("pca_explained_variance", pa.float64()),  # share of variance the PCA kept
            ("sizes", pa.string()),  # JSON list: locations per cluster number
            ("n_iter", pa.int32()),  # iterations the fit ran
            ("nonempty_clusters", pa.int32()),  # clusters that hold a location (fewer than k: degenerate input)
            ("warnings", pa.string()),  # JSON list of what was odd about the input (identical vectors ...) or null
            ("map_sha256", pa.string()),  # maps.file_sha256 of the map version the run was made on
            ("method", pa.string()),  # cluster | assign (null: cluster, runs written before assign existed)
            ("parent_run_id", pa.string()),  # assign: the run whose centroids and numbers it kept
            ("request_id", pa.string()),  # one per cluster request: the runs of one sweep share it (null before it was kept)
            ("code_version", pa.string()),
            ("created_at", TIMESTAMP),
            ("written_at", TIMESTAMP),
            ("assignments", pa.list_(ASSIGNMENT)),  # every clustered place: the view cluster_assignments
            ("duplicates", pa.list_(DUPLICATE_PAIR)),  # near-identical pairs: the view cluster_duplicates
        ]
    ),
    immutable=True,  # a run is never rewritten: the first commit of a run_id is the run
    rows_per_group=1,  # a run's assignments are read (filtered on run_id) without the others'
)

CLUSTER_NAMES = TableSpec(
    "cluster_names",
    ("run_id", "cluster", "rank"),
    pa.schema(
        [
            ("run_id", pa.string()),
            ("cluster", pa.int32()),
            ("rank", pa.int32()),  # 1 = the best-matching description
            ("name", pa.string()),  # a curated prompt, e.g. "a desert road"
            ("score", pa.float32()),  # cosine(prompt text embedding, cluster centroid)
            ("lift", pa.float32()),  # score minus the prompt's mean score over the run's clusters
            ("model", pa.string()),  # the text tower used (the run's model)
            ("written_at", TIMESTAMP),
        ]
    ),
)

# Every tag an export wrote into a map, so later exports remove exactly svcluster's own tags
# and comparisons with the map's tags never count them as the user's.
EXPORTED_TAGS = TableSpec(
    "exported_tags",
    ("map", "tag"),
    pa.schema(
        [
            ("map", pa.string()),
            ("tag", pa.string()),
            ("tag_format", pa.string()),  # the template that made it
            ("run_id", pa.string()),  # the run whose export wrote it (the latest one)
            ("written_at", TIMESTAMP),
        ]
    ),
)

# What each fetch of a map asked for, per view settings (the latest wins): the headings embed pools
# for that map at those settings, and (the latest row of the map) the settings it pools by
# default, so a place shared with another map fetched at other headings or settings is embedded
# from this map's views only.
MAP_VIEWS = TableSpec(
    "map_views",
    ("map", "width", "height", "fov", "pitch"),
    pa.schema(
        [
            ("map", pa.string()),
            ("headings", pa.list_(pa.int32())),
            ("width", pa.int32()),  # null for a folder import: its files stand for any size
            ("height", pa.int32()),
            ("fov", pa.float64()),
            ("pitch", pa.float64()),
            ("source", pa.string()),  # api | folder
            ("written_at", TIMESTAMP),
        ]
    ),
)

# Every search and similar request (tasks/search/step.py): what was asked and what it found, so a
# study set can be re-exported later.
SEARCHES = TableSpec(
    "searches",
    ("search_id",),
    pa.schema(
        [
            ("search_id", pa.string()),
            ("kind", pa.string()),  # text | location | coordinate | image
            ("query", pa.string()),  # the text, location id, "lat,lng" or image file names
            ("maps", pa.list_(pa.string())),  # the maps searched
            ("model", pa.string()),
            ("pooling", pa.string()),
            ("precision", pa.string()),
            ("top", pa.int32()),
            ("location_ids", pa.list_(pa.string())),  # the places found, best first
            ("scores", pa.list_(pa.float32())),  # their cosine to the query, same order
            ("created_at", TIMESTAMP),
            ("written_at", TIMESTAMP),
        ]
    ),
)

# The report's atlas (tasks/report/atlas.py): 2-D coordinates of each place of a vector set (the
# embeddings a run clustered, named by their fingerprint, model, pooling and precision), shared by
# every run and report of those embeddings. A rewrite with the same key wins.
PROJECTIONS = TableSpec(
    "projections",
    ("vector_set", "location_id"),
    pa.schema(
        [
            ("vector_set", pa.string()),
            ("location_id", pa.string()),
            ("x", pa.float32()),  # scaled into [-1, 1]
            ("y", pa.float32()),
            ("method", pa.string()),  # e.g. pca50-opentsne
            ("seed", pa.int64()),
            ("written_at", TIMESTAMP),
        ]
    ),
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (MAPS, LOCATIONS, IMAGES, EMBEDDINGS, EMBEDDING_VIEWS, CLUSTER_RUNS, CLUSTER_NAMES, EXPORTED_TAGS, SEARCHES, MAP_VIEWS, PROJECTIONS)
}
