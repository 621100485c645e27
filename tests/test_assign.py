"""``svcluster assign``: a grown map's new places get the parent run's nearest centroid in a new
run that keeps every old assignment unchanged and records its parent and method."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.cluster.assign import assign_run
from svcluster.tasks.errors import SvclusterError
from tests.cluster_data import append_embeddings, ingest_objects, write_labels

DIM = 8


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def objs(n):
    return [{"lat": -30.0 - i * 0.3, "lng": -70.0, "heading": 0} for i in range(n)]


@pytest.fixture
def grown(lake, tmp_path):
    """Run r1 over 8 places in two groups (around e0 -> cluster 1, around e1 -> cluster 0),
    then the map grows by 3 places: near e1, near e0, near e1."""
    rng = np.random.default_rng(2)
    e = np.eye(DIM, dtype=np.float32)
    old_ids = ingest_objects(lake, tmp_path, objs(8), "grow")
    groups = [0, 1, 0, 1, 0, 1, 0, 1]
    old = unit(np.stack([e[g] + 0.1 * rng.standard_normal(DIM) for g in groups])).astype(np.float32)
    append_embeddings(lake, old_ids, old)
    write_labels(lake, "grow", "r1", old_ids, [1 - g for g in groups])
    ids = ingest_objects(lake, tmp_path, objs(11), "grow")
    new_ids = ids[8:]
    new = unit(np.stack([e[1] + 0.05, e[0] + 0.05, e[1] - 0.05])).astype(np.float32)
    append_embeddings(lake, new_ids, new)
    return old_ids, new_ids


def assignments(lake, run_id):
    rows = lake.query("SELECT location_id, cluster, distance FROM cluster_assignments WHERE run_id = ?", [run_id]).to_pylist()
    return {r["location_id"]: (r["cluster"], r["distance"]) for r in rows}


def test_assign_keeps_old_assignments_and_gives_new_places_the_nearest_centroid(lake, grown):
    old_ids, new_ids = grown
    r = assign_run(lake, "grow@v1")
    assert r.run_id and r.kept == 8 and r.assigned == 3 and r.sizes == {0: 2, 1: 1}
    before, after = assignments(lake, "r1"), assignments(lake, r.run_id)
    assert {k: after[k] for k in before} == before  # every old assignment unchanged
    assert [after[i][0] for i in new_ids] == [0, 1, 0]
    assert all(0 <= after[i][1] < 0.5 for i in new_ids)
    row = lake.query("SELECT name, parent_run_id, method, n_locations, k, sizes FROM cluster_runs WHERE run_id = ?", [r.run_id]).to_pylist()[0]
    assert row["name"] == "grow@v2" and row["parent_run_id"] == "r1" and row["method"] == "assign"
    assert row["n_locations"] == 11 and row["k"] == 2 and json.loads(row["sizes"]) == [6, 5]
    assert assignments(lake, "r1") == before  # the parent run is untouched


def test_assign_again_finds_nothing_new(lake, grown):
    r = assign_run(lake, "grow@v1")
    again = assign_run(lake, r.run_id)
    assert again.run_id is None and "nothing to assign" in again.note
    same = assign_run(lake, "grow@v1")
    assert same.run_id == r.run_id and "reused" in same.note
    assert lake.query("SELECT count(*) FROM cluster_runs").column(0)[0].as_py() == 2


def test_assign_cli_json(lake, grown, capsys):
    assert main(["--lake", lake.uri, "--json", "assign", "grow@v1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["assigned"] == 3 and doc["parent_run_id"] == "r1"
    assert main(["--lake", lake.uri, "assign", "grow@v9"]) == 1
    capsys.readouterr()
    # the other commands read the assign run like any run: runs lists it, cluster aligns to it
    assert main(["--lake", lake.uri, "--json", "runs", "--map", "grow"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == ["grow@v1", "grow@v2"] and listed[1]["aligned_to_name"] == "grow@v1"
    # the lineage: the assign run names its parent and method, the fitted one has neither parent
    assert [(r["method"], r["parent_run_id"], r["parent_name"]) for r in listed] == [("cluster", None, None), ("assign", "r1", "grow@v1")]
    assert main(["--lake", lake.uri, "runs", "--map", "grow"]) == 0
    header, first, second = capsys.readouterr().out.splitlines()[:3]
    at, upto = header.index(" method ") + 1, header.index(" created ")  # fixed-width columns
    assert header[at:upto].split() == ["method", "parent"]
    assert first[at:upto].split() == ["cluster", "-"] and second[at:upto].split() == ["assign", "grow@v1"]
    assert main(["--lake", lake.uri, "--json", "cluster", "--map", "grow", "--k", "2"]) == 0


def test_assign_needs_a_cluster(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objs(3), "noise")
    append_embeddings(lake, ids, unit(np.random.default_rng(0).standard_normal((3, DIM))))
    write_labels(lake, "noise", "n1", ids, [-1, -1, -1], k=2)
    with pytest.raises(SvclusterError, match="no cluster"):
        assign_run(lake, "n1")
