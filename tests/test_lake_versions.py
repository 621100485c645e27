"""Delta tables behind the lake: versions and time travel, history, compaction, vacuum, schema
evolution, and a run with its assignments seen whole or not at all."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from svcluster.flows.cli import main
from svcluster.tasks.cluster.runs import commit_run
from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.maintenance import optimize_lake, vacuum_tables
from svcluster.tasks.lake.schemas import TABLES, TableSpec
from svcluster.tasks.lake.store import MAX_FILES_PER_TABLE, open_lake


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def images(n: int, status: str = "ok", start: int = 0) -> pa.Table:
    return pa.table({"location_id": [f"l{i}" for i in range(start, start + n)], "heading": [0] * n, "status": [status] * n})


def count(lake, sql: str = "SELECT count(*) FROM images", as_of=None) -> int:
    if as_of is None:
        return lake.query(sql).column(0)[0].as_py()
    result, _ = lake.query_script(sql, as_of=as_of)
    return result.column(0)[0].as_py()


def test_sql_as_of_a_version_or_a_time_and_history(lake, capsys) -> None:
    lake.append("images", images(3))
    v_three = len(lake.history())
    time.sleep(0.05)
    between = datetime.now(timezone.utc)
    time.sleep(0.05)
    lake.append("images", images(2, start=3))
    lake.append("images", images(5, "failed"))  # replaces all five: a merge, not more rows
    assert count(lake) == 5 and count(lake, "SELECT count(*) FROM images WHERE status = 'ok'") == 0
    assert count(lake, as_of=v_three) == 3
    assert count(lake, as_of=between.isoformat()) == 3
    assert count(lake, as_of=between.replace(tzinfo=None).isoformat()) == 3  # no zone: UTC
    assert count(lake, as_of=0) == 0
    code, out, err = run(capsys, "--lake", lake.uri, "--json", "sql", "--as-of", str(v_three), "SELECT count(*) AS n FROM images")
    assert code == 0 and json.loads(out) == [{"n": 3}], err
    code, _, err = run(capsys, "--lake", lake.uri, "sql", "--as-of", "yesterday-ish", "SELECT 1")
    assert code == 1 and "--as-of" in err
    code, out, err = run(capsys, "--lake", lake.uri, "--json", "lake", "history", "images")
    assert code == 0, err
    writes = [c for c in json.loads(out) if c["operation"] in ("WRITE", "MERGE")]
    # new keys are appended; rows replacing keys already there are a merge
    assert [(c["operation"], c["rows_added"], c["rows_updated"]) for c in writes] == [
        ("WRITE", 3, None), ("WRITE", 2, None), ("MERGE", 0, 5)]
    assert [c["lake_version"] for c in writes] == sorted(c["lake_version"] for c in writes)


def test_writing_the_same_rows_twice_adds_nothing_and_immutable_runs_keep_their_first_row(lake) -> None:
    lake.append("images", images(4))
    lake.append("images", images(4))
    assert count(lake) == 4
    run_row = {"run_id": "r1", "map": "m", "k": 3, "created_at": datetime.now(timezone.utc)}
    lake.append("cluster_runs", pa.Table.from_pylist([run_row]))
    lake.append("cluster_runs", pa.Table.from_pylist([{**run_row, "k": 9}]))
    assert lake.query("SELECT k FROM cluster_runs").to_pylist() == [{"k": 3}]


def test_a_run_with_its_assignments_and_pairs_is_one_commit_any_delta_reader_sees_whole(lake) -> None:
    before = lake.table_version("cluster_runs")
    assignments = pa.table({"location_id": ["a", "b", "c"], "cluster": pa.array([0, 1, 1], pa.int32()),
                            "distance": pa.array([0.1, 0.2, 0.3], pa.float32())})
    pairs = pa.table({"location_a": ["b"], "location_b": ["c"], "cosine": pa.array([0.999], pa.float32())})
    commit_run(lake, {"run_id": "r1", "map": "m", "k": 2, "created_at": datetime.now(timezone.utc)}, assignments, pairs)
    assert lake.table_version("cluster_runs") == before + 1  # one commit, no other table written
    assert count(lake, "SELECT count(*) FROM cluster_assignments WHERE run_id = 'r1'") == 3
    assert lake.query("SELECT location_a, location_b FROM cluster_duplicates").to_pylist() == [{"location_a": "b", "location_b": "c"}]
    # another engine reading the Delta table (here delta-rs itself) sees the run whole or not at all
    uri = lake.delta.uri("cluster_runs")
    assert DeltaTable(uri, version=before).to_pyarrow_table().num_rows == 0
    run = DeltaTable(uri, version=before + 1).to_pyarrow_table().to_pylist()[0]
    assert [(a["location_id"], a["cluster"]) for a in run["assignments"]] == [("a", 0), ("b", 1), ("c", 1)]


def test_each_run_is_its_own_row_group_also_after_compaction(lake) -> None:
    for i in range(4):
        ids = [f"l{j}" for j in range(50)]
        commit_run(lake, {"run_id": f"r{i}", "map": "m", "k": 2, "created_at": datetime.now(timezone.utc)},
                   pa.table({"location_id": ids, "cluster": pa.array([j % 2 for j in range(50)], pa.int32()),
                             "distance": pa.array([0.5] * 50, pa.float32())}))
    optimize_lake(lake, ["cluster_runs"])
    (only,) = lake.table_files("cluster_runs")
    with lake.fs.open(lake.path(only), "rb") as f:
        meta = pq.read_metadata(f)
    assert meta.num_row_groups == 4 and {meta.row_group(g).num_rows for g in range(4)} == {1}
    assert count(lake, "SELECT count(*) FROM cluster_assignments WHERE run_id = 'r2'") == 50


def test_compaction_bounds_the_files_and_vacuum_removes_the_replaced_ones(lake, capsys) -> None:
    for i in range(MAX_FILES_PER_TABLE):
        lake.append("images", images(10, start=10 * i))
    assert len(lake.table_files("images")) == MAX_FILES_PER_TABLE  # a file per batch, up to the bound
    lake.append("images", images(10, start=10 * MAX_FILES_PER_TABLE))  # one more: the table is compacted
    assert len(lake.table_files("images")) == 1 and count(lake) == 10 * (MAX_FILES_PER_TABLE + 1)
    data = lambda: [p for p in lake.list("tables/images") if p.endswith(".parquet") and "/_" not in p]  # noqa: E731
    assert len(data()) == MAX_FILES_PER_TABLE + 2  # the replaced files stay for time travel ...
    assert vacuum_tables(lake, retain_hours=24).files_removed["images"] == 0  # ... while they are young
    code, out, err = run(capsys, "--lake", lake.uri, "--json", "lake", "vacuum", "--retain", "0")
    assert code == 0, err
    assert json.loads(out)["table_files_removed"]["images"] == MAX_FILES_PER_TABLE + 1
    assert len(data()) == 1 and count(lake) == 10 * (MAX_FILES_PER_TABLE + 1)
    lake.append("images", images(10, start=1000))
    assert [(c.files_before, c.files_after) for c in optimize_lake(lake, ["images"])] == [(2, 1)]


def test_vacuum_removes_orphan_blobs_and_stale_caches(lake, capsys) -> None:
    orphan, _ = lake.put_blob(b"\xff\xd8 orphan \xff\xd9")
    lake.write_bytes("cache/vectors/0000stale.f32", b"\0" * 16)
    code, out, err = run(capsys, "--lake", lake.uri, "--json", "lake", "vacuum", "--retain", "0")
    assert code == 0, err
    assert (json.loads(out)["orphan_blobs_removed"], json.loads(out)["caches_removed"]) == (1, 1)
    assert not lake.exists(orphan) and not lake.exists("cache/vectors/0000stale.f32")
    code, _, err = run(capsys, "--lake", lake.uri, "lake", "vacuum", "--retain", "-1")
    assert code == 1 and "--retain" in err


def test_a_table_written_with_fewer_columns_still_reads_and_gains_them(tmp_path) -> None:
    root = tmp_path / "lake"
    lake = open_lake(str(root))
    shutil.rmtree(lake.path("tables/images"))  # an older svcluster's images table: fewer columns
    older = pa.schema([f for f in TABLES["images"].schema if f.name not in ("copyright", "official", "pano_lat")])
    old_spec = TableSpec("images", TABLES["images"].key, older)
    lake.delta.insert(old_spec, images(2).append_column("written_at", pa.array([datetime.now(timezone.utc)] * 2,
                                                                             pa.timestamp("us", tz="UTC"))).cast(
        pa.schema([older.field(n) for n in ("location_id", "heading", "status", "written_at")])))
    reader = open_lake(str(root), mode="read")
    assert reader.query("SELECT count(*) n, count(copyright) c FROM images").to_pylist() == [{"n": 2, "c": 0}]
    reader.append("images", pa.table({"location_id": ["l9"], "heading": [0], "status": ["ok"], "copyright": ["© Google"]}))
    assert reader.query("SELECT location_id, copyright FROM images ORDER BY 1").to_pylist() == [
        {"location_id": "l0", "copyright": None}, {"location_id": "l1", "copyright": None},
        {"location_id": "l9", "copyright": "© Google"}]


def test_an_unknown_lake_version_is_refused(lake) -> None:
    with pytest.raises(LakeError, match="no lake version"):
        lake.connect(as_of=10_000)


def test_versions_and_maintenance_on_s3(s3_lake) -> None:
    s3_lake.append("images", images(3))
    version = len(s3_lake.history())
    s3_lake.append("images", images(2, start=3))
    assert count(s3_lake) == 5 and count(s3_lake, as_of=version) == 3
    assert optimize_lake(s3_lake, ["images"])[0].files_after == 1
    assert vacuum_tables(s3_lake, retain_hours=0).files_removed["images"] == 2 and count(s3_lake) == 5
