"""The lake on a local folder: ingest into real Parquet, read back through DuckDB views."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from svcluster.tasks.errors import LakeError, MapFormatError
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import Lake, open_lake
from tests.fixtures.lake import lake_snapshot
from tests.fixtures.maps import geoguessr_doc, map_making_doc, vali_doc, write_map


def count(lake: Lake, map_name: str) -> int:
    return lake.query("SELECT count(*) FROM locations WHERE map = ?", [map_name]).column(0)[0].as_py()


def test_ingest_writes_maps_and_locations(lake, chile_map) -> None:
    r = ingest_map(lake, chile_map)
    assert (r.map, r.locations, r.format, r.dialect, r.duplicates, r.unchanged) == ("chile", 1000, "array", "geoguessr", 0, False)
    assert count(lake, "chile") == 1000
    m = lake.query("SELECT * FROM maps").to_pylist()
    assert len(m) == 1
    assert (m[0]["map"], m[0]["location_count"], m[0]["source_file"], m[0]["envelope"]) == ("chile", 1000, "chile.json", None)
    src = json.loads(chile_map.read_text())
    got = lake.query("SELECT lat, lng, pano_id, raw FROM locations ORDER BY position").to_pylist()
    assert [(g["lat"], g["lng"], g["pano_id"]) for g in got] == [(s["lat"], s["lng"], s["panoId"]) for s in src]
    assert [json.loads(g["raw"]) for g in got] == src
    # the table files are plain Parquet anyone can read
    part = lake.table_files("locations")  # the Delta table's current data files
    assert pq.read_table(lake.path(part[0])).num_rows == 1000


def test_every_format_lands_in_one_locations_table(lake, tmp_path) -> None:
    ingest_map(lake, write_map(tmp_path / "gg.json", geoguessr_doc(4)))
    ingest_map(lake, write_map(tmp_path / "mma.json", map_making_doc()))
    ingest_map(lake, write_map(tmp_path / "vali.json", vali_doc()))
    rows = lake.query("SELECT map, count(*) AS n, list(region_code ORDER BY position) AS regions FROM locations GROUP BY map ORDER BY map")
    assert rows.to_pylist() == [
        {"map": "gg", "n": 4, "regions": [None] * 4},
        {"map": "mma", "n": 3, "regions": ["RM", "MA", None]},
        {"map": "vali", "n": 2, "regions": ["CL-LL", "CL-TA"]},
    ]
    dialects = lake.query("SELECT map, format, dialect FROM maps ORDER BY map").to_pylist()
    assert [(d["format"], d["dialect"]) for d in dialects] == [
        ("array", "geoguessr"), ("customCoordinates", "map-making.app"), ("array", "vali")]


def test_reingest_of_the_same_file_adds_nothing(lake, chile_map) -> None:
    ingest_map(lake, chile_map)
    before = lake_snapshot(lake)
    again = ingest_map(lake, chile_map)
    assert again.unchanged and again.locations == 1000
    assert lake_snapshot(lake) == before
    assert count(lake, "chile") == 1000


def test_changed_file_replaces_the_map(lake, tmp_path) -> None:
    path = write_map(tmp_path / "m.json", geoguessr_doc(10))
    ingest_map(lake, path)
    other = write_map(tmp_path / "other.json", geoguessr_doc(3, seed=99))
    ingest_map(lake, other)
    files_before = set(lake.table_files("locations"))
    changed = geoguessr_doc(10)[4:]
    changed.append({"lat": -30.0, "lng": -70.0, "panoId": "brand-new"})
    write_map(path, changed)
    r = ingest_map(lake, path)
    assert not r.unchanged and r.locations == 7
    # replaced in one merge commit: the map's file is rewritten, the table does not grow by a file per write
    assert len(lake.table_files("locations")) <= len(files_before) + 1
    ids = lake.query("SELECT pano_id FROM locations WHERE map = 'm' ORDER BY position").column(0).to_pylist()
    assert ids == [x["panoId"] for x in changed]
    assert count(lake, "other") == 3  # the other map is untouched
    assert lake.query("SELECT location_count FROM maps WHERE map = 'm'").column(0)[0].as_py() == 7


def test_same_file_under_two_names_is_two_maps(lake, chile_map) -> None:
    ingest_map(lake, chile_map, "a")
    ingest_map(lake, chile_map, "b")
    assert (count(lake, "a"), count(lake, "b")) == (1000, 1000)
    assert lake.query("SELECT count(DISTINCT location_id) FROM locations").column(0)[0].as_py() == 1000


BAD_FILES = {
    "not-json": b"[{\"lat\": 1,",
    "wrong-shape": b'{"name": "x"}',
    "lat-range": json.dumps([{"lat": 1, "lng": 2}, {"lat": 95, "lng": 2}]).encode(),
    "lng-range": json.dumps({"customCoordinates": [{"lat": 1, "lng": -200}]}).encode(),
    "heading-text": json.dumps([{"lat": 1, "lng": 2, "heading": "N"}]).encode(),
    "tags-not-strings": json.dumps([{"lat": 1, "lng": 2, "extra": {"tags": [1]}}]).encode(),
    "empty": b"[]",
    "empty-custom": b'{"name": "x", "customCoordinates": []}',
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_leaves_the_lake_untouched(lake, tmp_path, chile_map, case) -> None:
    ingest_map(lake, chile_map, "victim")
    before = lake_snapshot(lake)
    bad = tmp_path / f"{case}.json"
    bad.write_bytes(BAD_FILES[case])
    for name in ("victim", None):  # neither replacing an existing map nor adding a new one
        with pytest.raises(MapFormatError) as err:
            ingest_map(lake, bad, name)
        assert str(err.value).startswith(str(bad))
        assert lake_snapshot(lake) == before
    assert count(lake, "victim") == 1000


@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs", "a\x00b", "..", "x/../../y"])
def test_map_names_that_look_like_paths_are_refused(lake, chile_map, name) -> None:
    before = lake_snapshot(lake)
    with pytest.raises(MapFormatError, match="--map"):
        ingest_map(lake, chile_map, name)
    assert lake_snapshot(lake) == before


def test_long_unicode_map_name_stays_inside_the_lake(lake, tmp_path, chile_map) -> None:
    name = "Ñ名🚗" * 66  # 198 characters, ~600 bytes of UTF-8
    ingest_map(lake, chile_map, name)
    assert count(lake, name) == 1000
    root = Path(lake.root)
    outside = [p for p in tmp_path.rglob("*") if root not in p.parents and p != root and p.parent != tmp_path]
    assert outside == []
    for f in root.rglob("*"):
        assert "Ñ" not in f.name and len(f.name) < 100


def test_lake_paths_cannot_leave_the_root(lake) -> None:
    for rel in ("../x", "tables/../../x", "", "a//b"):
        with pytest.raises(LakeError):
            lake.path(rel)
    assert lake.path("/tables/x") == f"{lake.root}/tables/x"


def test_appends_are_idempotent_through_the_views(lake) -> None:
    rows = pa.table({"location_id": ["a", "b"], "heading": [0, 90], "status": ["ok", "ok"]})
    lake.append("images", rows)
    lake.append("images", rows)
    assert lake.query("SELECT count(*) FROM images").column(0)[0].as_py() == 2
    lake.append("images", pa.table({"location_id": ["a"], "heading": [0], "status": ["failed"]}))
    got = dict(lake.query("SELECT location_id, status FROM images WHERE heading = 0").to_pylist()[0].items())
    assert got == {"location_id": "a", "status": "failed"}  # the later row wins
    files = len(lake.table_files("images"))  # merges rewrite files: how many there are is Delta's business
    assert lake.compact("images") == (files if files > 1 else 0)
    assert len(lake.table_files("images")) == 1
    assert lake.query("SELECT count(*) FROM images").column(0)[0].as_py() == 2
    assert not any(p.startswith("_tmp/") for p in lake.list("_tmp"))


def test_blobs_are_content_addressed(lake) -> None:
    rel, digest = lake.put_blob(b"jpeg bytes", "jpg")
    assert rel == f"blobs/{digest[:2]}/{digest}.jpg"
    assert lake.put_blob(b"jpeg bytes", "jpg") == (rel, digest)
    assert lake.read_bytes(rel) == b"jpeg bytes"


def test_local_listings_match_fsspecs(lake) -> None:
    """Local lakes list with os.scandir (fast); the answer is the one fsspec gives."""
    paths = [lake.put_blob(f"blob {i}".encode())[0] for i in range(50)]
    lake.write_bytes("reports/r1/deep/er/report.html", b"<html></html>")
    root = len(lake.root) + 1
    for prefix in ("blobs", "reports", "tables", "reports/r1/deep"):
        found = lake.fs.find(lake.path(prefix), detail=True)
        expected = {f[root:]: info["mtime"] for f, info in found.items()}
        assert lake.list_modified(prefix) == pytest.approx(expected)
        assert lake.list(prefix) == sorted(expected)
    assert set(paths) <= set(lake.list("blobs"))
    assert lake.list("no/such/folder") == [] and lake.list_modified("no/such") == {}
    assert lake.exists(paths[0]) and not lake.exists("blobs/00/none.jpg")


def test_two_lake_objects_share_the_views_and_see_new_files(tmp_path) -> None:
    a, b = open_lake(str(tmp_path / "l")), open_lake(str(tmp_path / "l"))
    assert a.query("SELECT count(*) AS n FROM locations").column("n")[0].as_py() == 0
    a.append("maps", pa.table({"map": ["m"], "source_file": ["f"], "dialect": ["geoguessr"], "checksum": ["c"], "locations": [0]}))
    assert b.query("SELECT map FROM maps").column("map").to_pylist() == ["m"]


def test_reopening_a_lake_keeps_it(lake, chile_map) -> None:
    ingest_map(lake, chile_map)
    before = lake_snapshot(lake)
    again = open_lake(lake.uri)
    assert lake_snapshot(again) == before
    assert count(again, "chile") == 1000


def test_svcluster_sql_opens_the_lake_in_plain_duckdb(lake, chile_map, monkeypatch) -> None:
    ingest_map(lake, chile_map)
    script = Path(lake.path("svcluster.sql")).read_text()
    monkeypatch.chdir(lake.root)  # the file's lake is the folder DuckDB runs in
    con = duckdb.connect()  # a bare connection: nothing of svcluster but the file
    con.execute(script)
    query = "SELECT map, count(*) AS n, round(avg(lat), 6) AS lat FROM locations GROUP BY map"
    assert con.sql(query).fetchall() == [tuple(r.values()) for r in lake.query(query).to_pylist()]
    raw = con.sql("SELECT json FROM export_locations('chile', NULL, 'k{k}-c{cluster}') LIMIT 1").fetchall()[0]
    assert json.loads(raw[0]) == json.loads(chile_map.read_text())[0]


@pytest.mark.skipif(shutil.which("duckdb") is None, reason="the duckdb CLI is not installed (pip install duckdb-cli)")
def test_duckdb_cli_with_init_file(lake, chile_map) -> None:
    ingest_map(lake, chile_map)
    out = subprocess.run(
        ["duckdb", "-init", "svcluster.sql", "-csv", "-c", "SELECT count(*) AS n FROM locations"],
        cwd=lake.root, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-2:] == ["n", "1000"]


def test_a_lake_with_a_dropped_column_still_reads(tmp_path) -> None:
    """``cluster_runs.cluster_names`` (never filled) was dropped from the schema: a lake whose
    table still has it (written before) reads, the column shows as it was (all nulls), and runs
    written without it merge in beside the old ones."""
    from deltalake import write_deltalake

    from svcluster.tasks.lake.schemas import CLUSTER_RUNS, TABLES

    lake = open_lake(str(tmp_path / "lake"))
    old = pa.schema(list(CLUSTER_RUNS.schema) + [pa.field("cluster_names", pa.string())])
    row = {"run_id": "r-old", "map": "m", "k": 3, "cluster_names": None}
    write_deltalake(lake.path("tables/cluster_runs"), pa.Table.from_pylist([row], schema=old), mode="overwrite", schema_mode="overwrite")
    lake.append("cluster_runs", pa.Table.from_pylist([{"run_id": "r-new", "map": "m", "k": 4}]))
    assert "cluster_names" not in TABLES["cluster_runs"].schema.names
    got = lake.query("SELECT run_id, k, cluster_names FROM cluster_runs ORDER BY run_id").to_pylist()
    assert got == [{"run_id": "r-new", "k": 4, "cluster_names": None}, {"run_id": "r-old", "k": 3, "cluster_names": None}]



def test_a_column_written_with_another_type_still_reads(tmp_path) -> None:
    """Files whose ``heading`` is a BIGINT (another writer's types) read, and a count over
    them too."""
    from deltalake import write_deltalake

    lake = open_lake(str(tmp_path / "lake"))
    other = pa.table({"location_id": ["a", "b"], "heading": pa.array([90, 180], pa.int64()), "status": ["ok", "ok"]})
    write_deltalake(lake.path("tables/images"), other, mode="overwrite", schema_mode="overwrite")
    got = lake.query("SELECT location_id, heading, path FROM images ORDER BY 1").to_pylist()
    assert got == [{"location_id": "a", "heading": 90, "path": None}, {"location_id": "b", "heading": 180, "path": None}]
    assert lake.query("SELECT count(*) AS n FROM images").to_pylist() == [{"n": 2}]


def test_a_new_process_opens_a_lake_with_exported_tags(tmp_path) -> None:
    """``export_locations(map_name, run, tag_format, ...)`` is defined after the views: over an
    ``exported_tags`` table with files (a column named ``tag_format``) the views bind in a new
    process (DuckDB binds a macro parameter to a same-named column a view names)."""
    root = tmp_path / "lake"
    lake = open_lake(str(root))
    lake.append("exported_tags", pa.table({"map": ["m"], "tag": ["k3-1"], "tag_format": ["k{k}-{c}"], "run_id": ["r"]}))
    code = ("import sys; from svcluster.tasks.lake.store import open_lake; "
            "print(open_lake(sys.argv[1], mode='read').query('SELECT tag_format FROM exported_tags').to_pylist())")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[{'tag_format': 'k{k}-{c}'}]"


def pq_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
