"""`svcluster lake migrate`: a lake of the previous format (folders of Parquet parts, written by
the previous code: tests/fixtures/legacy_lake/make.py) becomes Delta tables with nothing lost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from svcluster.flows.cli import main
from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.store import open_lake

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_lake" / "lake"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def copied(fixture: Path, tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(fixture, root)
    return root


@pytest.fixture
def legacy(tmp_path) -> Path:
    return copied(FIXTURE, tmp_path)


def test_a_previous_format_lake_is_refused_with_the_command_that_converts_it(legacy, capsys) -> None:
    with pytest.raises(LakeError, match="lake migrate"):
        open_lake(str(legacy), mode="write")
    code, _, err = run(capsys, "--lake", str(legacy), "sql", "SELECT count(*) FROM maps")
    assert code == 1 and "lake migrate" in err and len(err.strip().splitlines()) == 1


def test_migrate_converts_maps_images_blobs_and_the_rest(legacy, capsys) -> None:
    blobs_before = sorted(p.relative_to(legacy) for p in (legacy / "blobs").rglob("*.jpg"))
    code, out, err = run(capsys, "--lake", str(legacy), "--json", "lake", "migrate")
    assert code == 0, err
    result = json.loads(out)
    assert result["migrated"] and result["converted"]["maps"] == 2 and result["converted"]["images"] == 8
    lake = open_lake(str(legacy), mode="read")
    assert lake.query("SELECT map, location_count FROM maps ORDER BY map").to_pylist() == [
        {"map": "north", "location_count": 3}, {"map": "south", "location_count": 2}]
    assert lake.query("SELECT map, count(*) n FROM locations GROUP BY map ORDER BY map").to_pylist() == [
        {"map": "north", "n": 3}, {"map": "south", "n": 2}]
    images = {(r["location_id"], r["heading"]): r for r in lake.query("SELECT * FROM images").to_pylist()}
    assert len(images) == 8 and images[("n2", 180)]["status"] == "no_imagery"  # the later row won, as before
    for r in images.values():
        if r["status"] == "ok":
            assert lake.exists(r["path"])  # the blobs stay where the rows say
    assert sorted(p.relative_to(legacy) for p in (legacy / "blobs").rglob("*.jpg")) == blobs_before
    assert lake.query("SELECT count(*) n, max(len(vector)) d FROM embeddings").to_pylist() == [{"n": 4, "d": 4}]
    assert lake.query("SELECT run_id, name FROM cluster_runs").to_pylist() == [{"run_id": "run-committed", "name": "north@v1"}]
    assert lake.query("SELECT count(*) n FROM cluster_assignments").to_pylist() == [{"n": 3}]  # the killed run's are gone
    assert (legacy / result["kept_at"] / "maps").is_dir()  # the previous files are kept aside
    # a second migrate has nothing to do; writing commands work on the converted lake
    code, out, _ = run(capsys, "--lake", str(legacy), "lake", "migrate")
    assert code == 0 and "nothing to convert" in out
    writer = open_lake(str(legacy), mode="write")
    assert writer.table_version("maps") is not None


DELTA_V1 = Path(__file__).parent / "fixtures" / "delta_v1_lake" / "lake"


@pytest.fixture
def delta_v1(tmp_path) -> Path:
    return copied(DELTA_V1, tmp_path)


def test_a_first_delta_layout_lake_has_its_runs_assignments_folded_into_their_rows(delta_v1, capsys) -> None:
    # written by the code of that layout (tests/fixtures/delta_v1_lake/make.py, commit e594984):
    # assignments and pairs in Delta tables of their own, one run committed, one killed before its
    # row. Its shape is svcluster's own lake, not a user's map or Google's reply (those fixtures
    # are the real-map and Street View ones of the ingest and fetch tests), so its rows are minimal.
    with pytest.raises(LakeError, match="lake migrate"):
        open_lake(str(delta_v1), mode="read")
    code, out, err = run(capsys, "--lake", str(delta_v1), "--json", "lake", "migrate")
    assert code == 0, err
    result = json.loads(out)
    assert result["migrated"] and result["folded"]
    assert result["converted"] == {"cluster_runs": 1, "cluster_assignments": 6, "cluster_duplicates": 2}
    lake = open_lake(str(delta_v1), mode="read")
    assert lake.query("SELECT run_id, name FROM cluster_runs").to_pylist() == [{"run_id": "run-committed", "name": "north@v1"}]
    assert lake.query("SELECT run_id, location_id, cluster FROM cluster_assignments ORDER BY location_id").to_pylist() == [
        {"run_id": "run-committed", "location_id": "n1", "cluster": 0},
        {"run_id": "run-committed", "location_id": "n2", "cluster": 0},
        {"run_id": "run-committed", "location_id": "n3", "cluster": 1}]  # the killed run's are gone
    assert lake.query("SELECT run_id, location_a, location_b FROM cluster_duplicates").to_pylist() == [
        {"run_id": "run-committed", "location_a": "n1", "location_b": "n2"}]
    assert lake.query("SELECT count(*) n FROM locations").to_pylist() == [{"n": 3}]  # other tables untouched
    assert not (delta_v1 / "tables" / "cluster_assignments").exists()
    assert (delta_v1 / result["kept_at"] / "cluster_assignments" / "_delta_log").is_dir()  # kept aside
    code, out, _ = run(capsys, "--lake", str(delta_v1), "lake", "migrate")
    assert code == 0 and "nothing to convert" in out
