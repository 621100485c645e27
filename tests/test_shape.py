"""The shape of a map in SQL (issue 19.2-19.4): how clusters split from one k to the next
(``cluster_lineage``), outliers (``cluster_outliers``, ``export --tag-outliers``) and
near-identical panoramas (``duplicate_panoramas``), each on planted data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
from svcluster.tasks.export.step import export_map
from tests.cluster_data import append_embeddings, ingest_sample

GROUPS, SUBS, PER_SUB = 3, 2, 40


def nested(dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 far-apart groups, each of 2 sub-blobs (near each other, far from the other groups).
    Returns (matrix, sub-blob index per row: group = sub // 2)."""
    rng = np.random.default_rng(seed)
    groups = np.eye(dim, dtype=np.float32)[:GROUPS] * 40.0
    offsets = np.eye(dim, dtype=np.float32)[GROUPS : GROUPS + SUBS] * 6.0
    sub = np.repeat(np.arange(GROUPS * SUBS), PER_SUB)
    centres = groups[sub // SUBS] + offsets[sub % SUBS]
    return (centres + rng.standard_normal((len(sub), dim)).astype(np.float32) * 0.4).astype(np.float32), sub


@pytest.fixture
def nested_map(lake, tmp_path):
    locs = ingest_sample(lake, tmp_path, n=GROUPS * SUBS * PER_SUB)
    ids = [loc["location_id"] for loc in locs]
    matrix, sub = nested()
    append_embeddings(lake, ids, matrix)
    return lake, ids, sub


def lineage(lake, k_coarse: int, k_fine: int) -> list[dict]:
    return lake.query(
        "SELECT * FROM cluster_lineage WHERE map = 'chile' AND k_coarse = ? AND k_fine = ? ORDER BY cluster_coarse, cluster_fine",
        [k_coarse, k_fine],
    ).to_pylist()


def test_lineage_of_a_nested_clustering_splits_each_coarse_cluster_in_two(nested_map):
    lake, ids, sub = nested_map
    result = cluster_map(lake, "chile", ClusterOptions(ks=[3, 6]))
    rows = lineage(lake, 3, 6)
    assert {r["run_coarse"] for r in rows} == {result.runs[0].run_id} and {r["run_fine"] for r in rows} == {result.runs[1].run_id}
    by_coarse: dict[int, list[dict]] = {}
    for r in rows:
        by_coarse.setdefault(r["cluster_coarse"], []).append(r)
    assert sorted(by_coarse) == [0, 1, 2]
    for children in by_coarse.values():
        assert [c["places"] for c in children] == [PER_SUB, PER_SUB]
        assert [c["share_of_coarse"] for c in children] == [0.5, 0.5]
    fine = [r["cluster_fine"] for r in rows]
    assert sorted(fine) == list(range(6))  # every fine cluster has exactly one parent
    assert sum(r["places"] for r in rows) == len(ids)


def test_lineage_pairs_consecutive_k_of_separate_requests_on_the_same_vectors(nested_map):
    lake, ids, _ = nested_map
    for k in (6, 3, 2):  # three commands, in any order: one sweep (same vectors, same parameters)
        cluster_map(lake, "chile", ClusterOptions(k=k))
    cluster_map(lake, "chile", ClusterOptions(k=4, pca_dims=5))  # other vectors: not in that sweep
    pairs = lake.query("SELECT DISTINCT k_coarse, k_fine FROM cluster_lineage ORDER BY k_coarse").to_pylist()
    assert [(p["k_coarse"], p["k_fine"]) for p in pairs] == [(2, 3), (3, 6)]
    rows = lineage(lake, 2, 3)
    # k=2 puts two groups together, which split into two at k=3; the third group stays whole
    assert sorted(r["places"] for r in rows) == [2 * PER_SUB, 2 * PER_SUB, 2 * PER_SUB]
    assert sorted(r["share_of_coarse"] for r in rows) == [0.5, 0.5, 1.0]


def planted_outliers(dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two blobs of 100 places, and 4 places pushed far out of blob 0 (the last 4 rows)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim), np.float32)
    centres[1, 0] = 30.0
    truth = np.repeat([0, 1], 100)
    x = centres[truth] + rng.standard_normal((200, dim)).astype(np.float32) * 0.3
    away = np.eye(dim, dtype=np.float32)[[1, 2, 3, 4]] * np.asarray([[4.0], [5.0], [6.0], [7.0]], np.float32)
    return np.vstack([x, centres[0] + away]).astype(np.float32), np.r_[truth, [0, 0, 0, 0]]


@pytest.fixture
def outlying(lake, tmp_path):
    locs = ingest_sample(lake, tmp_path, n=204)
    ids = [loc["location_id"] for loc in locs]
    matrix, _ = planted_outliers()
    append_embeddings(lake, ids, matrix)
    run = cluster_map(lake, "chile", ClusterOptions(k=2)).run
    return lake, ids, run


def test_outliers_are_the_planted_far_places_farthest_first(outlying):
    lake, ids, run = outlying
    rows = lake.query("SELECT * FROM cluster_outliers WHERE run_id = ? ORDER BY rank_in_run", [run.run_id]).to_pylist()
    planted = ids[-4:]
    assert [r["location_id"] for r in rows[:4]] == planted[::-1]  # pushed 7, 6, 5, 4 out: farthest first
    assert len(rows) <= 4 + 2  # a Gaussian blob has almost nothing past its Tukey fence
    top = rows[0]
    assert top["rank_in_cluster"] == 1 and top["relative_distance"] > 3 and top["distance"] > top["fence"]
    assert top["cluster_size"] == 104 and top["name"] == run.name
    loose = lake.query("SELECT count(*) FROM cluster_outliers_at(10.0) WHERE run_id = ?", [run.run_id]).column(0)[0].as_py()
    assert loose < len(rows)


def test_export_tag_outliers_adds_outlier_and_a_later_export_removes_it(outlying, tmp_path, capsys):
    lake, ids, run = outlying
    outliers = set(lake.query("SELECT location_id FROM cluster_outliers WHERE run_id = ?", [run.run_id]).column(0).to_pylist())
    out = tmp_path / "out.json"
    assert main(["--lake", lake.uri, "export", run.name, "--out", str(out), "--tag-outliers"]) == 0
    assert f"{len(outliers)} tagged outlier" in capsys.readouterr().out
    objects = json.loads(out.read_text())["customCoordinates"]
    tagged = {lid for lid, o in zip(ids, objects) if "outlier" in o["extra"]["tags"]}
    assert tagged == outliers and set(ids[-4:]) <= tagged
    assert all(o["extra"]["tags"][-1] == "outlier" for lid, o in zip(ids, objects) if lid in outliers)
    assert "outlier" in lake.query("SELECT tag FROM exported_tags WHERE map = 'chile'").column(0).to_pylist()
    result = export_map(lake, out, run=run.name)
    assert result.outliers == 0
    objects = json.loads(out.read_text())["customCoordinates"]
    assert not any("outlier" in o["extra"]["tags"] for o in objects)
    assert main(["--lake", lake.uri, "export", "--map", "chile", "--out", str(out), "--tag-outliers"]) != 0
