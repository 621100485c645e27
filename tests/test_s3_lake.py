"""The same lake on S3 (a moto server on 127.0.0.1 speaking the real S3 protocol)."""

from __future__ import annotations

import json

import pytest

from svcluster.tasks.errors import MapFormatError
from svcluster.tasks.export.step import export_map
from svcluster.tasks.ingest.step import ingest_map
from tests.fixtures.lake import lake_snapshot
from tests.fixtures.maps import map_making_doc, vali_doc, write_map

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
