"""Keyed writes of new rows are appends, and stay correct when another writer adds the same keys
between our look at the table and our commit (two fetches of overlapping maps do this).

The race is made exact: the second writer's real append is preceded, at the moment it commits, by
the first writer's real commit of the same keys (a wrapper around ``write_deltalake`` that lets the
other ``Lake`` write first). Every write is a real Delta commit on disk.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa
import pytest

import svcluster.tasks.lake.delta as delta
from svcluster.tasks.lake.store import open_lake


def images(ids, status: str) -> pa.Table:
    return pa.table({"location_id": list(ids), "heading": [0] * len(ids), "status": [status] * len(ids)})


@pytest.fixture()
def two_writers(tmp_path):
    first = open_lake(str(tmp_path / "lake"))
    second = open_lake(str(tmp_path / "lake"))
    second.delta._handles.clear()  # its own handles: it knows only what it reads itself
    return first, second


def race(monkeypatch, first, table: str, rows: pa.Table) -> None:
    """Make ``first`` commit ``rows`` to ``table`` just before the next append of anyone else."""
    real = delta.write_deltalake
    state = {"done": False}

    def first_commits_meanwhile(target, data, *args, **kwargs):
        if not state["done"] and kwargs.get("mode") == "append":
            state["done"] = True
            first.append(table, rows)
        return real(target, data, *args, **kwargs)

    monkeypatch.setattr(delta, "write_deltalake", first_commits_meanwhile)


def rows_of(lake, sql: str) -> list[dict]:
    return lake.query(sql).to_pylist()


def test_new_rows_are_appended_and_keys_already_there_are_merged(two_writers) -> None:
    lake, _ = two_writers
    lake.append("images", images(["a", "b"], "ok"))
    lake.append("images", images(["c"], "ok"))
    lake.append("images", images(["b", "d"], "failed"))  # b is there: this one is a merge
    ops = [c.operation for c in lake.history() if c.table == "images"][1:]
    assert ops == ["WRITE", "WRITE", "MERGE"]
    assert rows_of(lake, "SELECT location_id, status FROM images ORDER BY 1") == [
        {"location_id": "a", "status": "ok"}, {"location_id": "b", "status": "failed"},
        {"location_id": "c", "status": "ok"}, {"location_id": "d", "status": "failed"}]


def test_an_append_racing_another_writer_of_the_same_keys_keeps_one_row_per_key(two_writers, monkeypatch) -> None:
    first, second = two_writers
    first.append("images", images(["x"], "ok"))
    second.query("SELECT count(*) FROM images")  # the second writer has looked at the table
    race(monkeypatch, first, "images", images(["a", "b"], "failed"))
    second.append("images", images(["a", "b", "c"], "ok"))  # looked before a, b were there
    got = rows_of(open_lake(first.uri), "SELECT location_id, status FROM images ORDER BY 1")
    assert got == [{"location_id": "a", "status": "ok"}, {"location_id": "b", "status": "ok"},
                   {"location_id": "c", "status": "ok"}, {"location_id": "x", "status": "ok"}]  # the later write wins
    last = [c for c in first.history() if c.table == "images"][-1]
    assert last.operation == "WRITE" and last.rows_added == 2  # a and b, written once more in one commit


def test_an_immutable_row_racing_another_writer_keeps_the_first(two_writers, monkeypatch) -> None:
    first, second = two_writers
    run_row = {"run_id": "r1", "map": "m", "k": 3, "created_at": datetime.now(timezone.utc)}
    second.query("SELECT count(*) FROM cluster_runs")
    race(monkeypatch, first, "cluster_runs", pa.Table.from_pylist([run_row]))
    second.append("cluster_runs", pa.Table.from_pylist([{**run_row, "k": 9}, {**run_row, "run_id": "r2", "k": 5}]))
    assert rows_of(open_lake(first.uri), "SELECT run_id, k FROM cluster_runs ORDER BY 1") == [
        {"run_id": "r1", "k": 3}, {"run_id": "r2", "k": 5}]


def test_a_race_on_other_keys_changes_nothing(two_writers, monkeypatch) -> None:
    first, second = two_writers
    second.query("SELECT count(*) FROM images")
    race(monkeypatch, first, "images", images(["p"], "ok"))
    second.append("images", images(["q"], "failed"))
    lake = open_lake(first.uri)
    assert rows_of(lake, "SELECT location_id, status FROM images ORDER BY 1") == [
        {"location_id": "p", "status": "ok"}, {"location_id": "q", "status": "failed"}]
    assert [c.operation for c in lake.history() if c.table == "images"][-2:] == ["WRITE", "WRITE"]


def test_writers_appending_at_once_past_the_compaction_bound_all_commit(tmp_path) -> None:
    """Three writers (threads, each its own Lake, as a flow's task threads are) append new keys at
    once while the table passes the compaction bound: compactions and appends race, all commit."""
    import threading

    from svcluster.tasks.lake.store import MAX_FILES_PER_TABLE

    root = str(tmp_path / "lake")
    open_lake(root)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        lake = open_lake(root)
        for b in range(MAX_FILES_PER_TABLE // 2 + 2):
            try:
                lake.append("images", images([f"w{w}-b{b}-{i}" for i in range(20)], "ok"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lake = open_lake(root)
    batches = 3 * (MAX_FILES_PER_TABLE // 2 + 2)
    assert rows_of(lake, "SELECT count(*) AS n, count(DISTINCT location_id) AS d FROM images") == [{"n": 20 * batches, "d": 20 * batches}]
    assert len(lake.table_files("images")) <= MAX_FILES_PER_TABLE
    assert "OPTIMIZE" in [c.operation for c in lake.history("images")]


def test_two_compactions_of_one_version_are_mended_to_one_row_per_key(tmp_path) -> None:
    """delta-rs lets two compactions that read one version both commit (delta-io/delta-rs#3982:
    a remove of data only moved is not checked against another's), doubling those rows. Two
    handles on one version compact it, as two processes would; the second's commit is mended."""
    from deltalake import DeltaTable

    lake = open_lake(str(tmp_path / "lake"))
    for b in range(4):
        lake.append("images", images([f"b{b}-{i}" for i in range(5)], "ok"))
    uri = lake.delta.uri("images")
    first, second = DeltaTable(uri), DeltaTable(uri)
    first.optimize.compact()
    second.optimize.compact()
    assert rows_of(lake, "SELECT count(*) AS n FROM images") == [{"n": 40}]  # the rows twice
    lake.delta._mend_double_compaction("images", second.version())
    assert rows_of(open_lake(lake.uri), "SELECT count(*) AS n, count(DISTINCT location_id) AS d FROM images") == [{"n": 20, "d": 20}]
    lake.delta._mend_double_compaction("images", first.version())  # the first one raced nobody: nothing to do
    assert rows_of(open_lake(lake.uri), "SELECT count(*) AS n FROM images") == [{"n": 20}]
