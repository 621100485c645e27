"""The same lake on S3 (a moto server on 127.0.0.1 speaking the real S3 protocol)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from svcluster.tasks.errors import MapFormatError
from svcluster.tasks.export.step import export_map
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import open_lake
from tests.fixtures.lake import lake_snapshot
from tests.fixtures.maps import map_making_doc, vali_doc, write_map
from tests.fixtures.s3_requests import Requests

QUERIES = [
    "SELECT map, count(*) AS n, min(position) AS first, max(position) AS last FROM locations GROUP BY map ORDER BY map",
    "SELECT map, location_id, lat, lng, pano_id, region_code, tags, raw FROM locations ORDER BY map, position",
    "SELECT map, format, dialect, envelope, location_count, duplicates, file_sha256 FROM maps ORDER BY map",
    "SELECT map, json FROM export_locations('mma', NULL, 'k{k}-c{cluster}') ORDER BY position",
]


def fill(lake, tmp_path, chile_map) -> None:
    ingest_map(lake, chile_map)
    ingest_map(lake, write_map(tmp_path / "mma.json", map_making_doc()))
    ingest_map(lake, write_map(tmp_path / "vali.json", vali_doc()))


def test_local_and_s3_lakes_answer_the_same(lake, s3_lake, tmp_path, chile_map) -> None:
    assert s3_lake.uri.startswith("s3://") and not s3_lake.is_local
    fill(lake, tmp_path, chile_map)
    fill(s3_lake, tmp_path, chile_map)
    for query in QUERIES:
        query = query.replace("SELECT map, json", "SELECT 'mma' AS map, json")
        assert s3_lake.query(query).to_pylist() == lake.query(query).to_pylist(), query
    # as many table files on both (Delta names its files itself)
    assert len(s3_lake.table_files("locations")) == len(lake.table_files("locations"))


def test_s3_round_trip_reingest_and_bad_input(s3_lake, tmp_path, chile_map) -> None:
    ingest_map(s3_lake, chile_map)
    out = tmp_path / "out.json"
    export_map(s3_lake, out, map_name="chile")
    assert json.loads(out.read_text()) == json.loads(chile_map.read_text())
    before = lake_snapshot(s3_lake)
    assert ingest_map(s3_lake, chile_map).unchanged
    bad = write_map(tmp_path / "chile.json", [{"lat": 1, "lng": 500}])
    with pytest.raises(MapFormatError, match="item 0: field 'lng'"):
        ingest_map(s3_lake, bad)
    assert lake_snapshot(s3_lake) == before


def test_s3_catalog_sql_loads_httpfs_and_holds_no_secret(s3_lake) -> None:
    sql = s3_lake.duckdb_catalog_sql()
    assert "LOAD httpfs" in sql and f"SET VARIABLE lake_root = '{s3_lake.uri}'" in sql
    assert "testing" not in sql  # the moto credentials are in the environment, never in the file
    assert not s3_lake.exists("svcluster.sql")


def image_rows(first: int, count: int) -> pa.Table:
    """``images`` rows for ``count`` places from number ``first``, four headings each (as a fetch
    batch writes them)."""
    ids = [f"loc-{i:05d}" for i in range(first, first + count)]
    return pa.table({
        "location_id": [i for i in ids for _ in range(4)],
        "heading": pa.array([h for _ in ids for h in (0, 90, 180, 270)], pa.int32()),
        "status": ["ok"] * (4 * count), "path": [f"blobs/{i}-{h}.jpg" for i in ids for h in (0, 90, 180, 270)],
        "width": pa.array([640] * (4 * count), pa.int32()), "height": pa.array([640] * (4 * count), pa.int32()),
        "fov": pa.array([90] * (4 * count), pa.int32()), "pitch": pa.array([0] * (4 * count), pa.int32()),
    })


def test_batches_of_new_keys_read_no_data_file_back_and_a_repeated_batch_adds_nothing(s3_lake) -> None:
    s3_lake.append("images", image_rows(0, 50))
    with Requests() as seen:
        for first in (50, 100, 150):  # each batch's keys checked against the files before it
            s3_lake.append("images", image_rows(first, 50))
    data_reads = [line for line in seen.lines if "/tables/images/part-" in line and ('"GET ' in line or '"HEAD ' in line)]
    assert data_reads == []  # the keys of a file this process wrote are known, not read back
    count = "SELECT count(*) AS n, count(DISTINCT location_id) AS places FROM images"
    assert s3_lake.query(count).to_pylist() == [{"n": 800, "places": 200}]
    s3_lake.append("images", image_rows(100, 50))  # keys this process learned as it wrote them
    open_lake(s3_lake.uri).append("images", image_rows(0, 50))  # a new Lake (as another process) reads them back
    assert s3_lake.query(count).to_pylist() == [{"n": 800, "places": 200}]
