"""The shape of a map in SQL (issue 19.2-19.4): how clusters split from one k to the next
(``cluster_lineage``), outliers (``cluster_outliers``, ``export --tag-outliers``) and
near-identical panoramas (``duplicate_panoramas``), each on planted data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.sql import load_sql
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


def test_near_duplicates_finds_planted_pairs_within_clusters_only():
    from svcluster.tasks.cluster.duplicates import near_duplicates

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x[[10, 2000]] = x[[5, 1500]] + 0.01 * rng.standard_normal((2, 64)).astype(np.float32)  # two planted copies
    x[2999] = x[0] * 3.0  # the same direction, another length: cosine 1
    labels = np.zeros(3000, np.int32)
    pairs = near_duplicates(x, labels, block=256)  # blocks smaller than the cluster
    assert sorted(zip(pairs.a.tolist(), pairs.b.tolist())) == [(0, 2999), (5, 10), (1500, 2000)]
    assert (pairs.cosine >= 0.995).all()
    labels[1500:] = 1
    labels[2000] = 2  # a pair split across clusters is not compared
    split = near_duplicates(x, labels)
    assert sorted(zip(split.a.tolist(), split.b.tolist())) == [(5, 10)]


def test_duplicate_panoramas_lists_planted_pairs_whose_panoramas_differ(lake, tmp_path, capsys):
    import pyarrow as pa

    from tests.cluster_data import ingest_objects

    rng = np.random.default_rng(2)
    n = 80
    objects = [{"lat": -30.0 - i * 0.1, "lng": -70.0, "heading": 0, "panoId": f"PANO{i:018d}"} for i in range(n - 2)]
    objects += [{"lat": -40.0, "lng": -71.0, "heading": 0}, {"lat": -40.5, "lng": -71.5, "heading": 0}]  # no pano ids
    ids = ingest_objects(lake, tmp_path, objects, "dups")
    x = rng.standard_normal((n, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[1] = x[0] + 0.002 * rng.standard_normal(32).astype(np.float32)  # the same spot twice
    x[3] = x[2]  # a copy
    x[n - 1] = x[n - 2]  # two places without pano ids: the fetch was served the same panorama
    append_embeddings(lake, ids, x)
    lake.append(
        "images",
        pa.table({"location_id": ids[n - 2 :], "heading": [0, 0], "status": ["ok", "ok"], "pano_id": ["SAMEPANO", "SAMEPANO"]}),
    )
    assert main(["--lake", lake.uri, "cluster", "--map", "dups", "--k", "2"]) == 0
    out = capsys.readouterr().out
    rows = lake.query("SELECT * FROM duplicate_panoramas WHERE map = 'dups' ORDER BY location_a").to_pylist()
    pairs = {frozenset((r["location_a"], r["location_b"])) for r in rows}
    assert pairs == {frozenset(ids[0:2]), frozenset(ids[2:4])}
    assert all(r["pano_a"] != r["pano_b"] and r["cosine"] >= 0.995 and r["km"] > 0 for r in rows)
    assert lake.query("SELECT count(*) FROM cluster_duplicates").column(0)[0].as_py() == 3  # the same-pano pair is stored
    assert "2 pairs of near-identical panoramas" in out
    assert main(["--lake", lake.uri, "runs", "--map", "dups"]) == 0
    assert "2 duplicate panorama pairs" in capsys.readouterr().out
    assert main(["--lake", lake.uri, "--json", "runs", "--map", "dups"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["duplicates"] == 2


def test_report_shows_outliers_duplicates_and_lineage(lake, tmp_path):
    import re

    from svcluster.tasks.report.page import build_report

    locs = ingest_sample(lake, tmp_path, n=204)
    ids = [loc["location_id"] for loc in locs]
    matrix, _ = planted_outliers()
    matrix[7] = matrix[3]  # one copy
    append_embeddings(lake, ids, matrix)
    result = cluster_map(lake, "chile", ClusterOptions(ks=[2, 3]))
    run = result.runs[0]
    build_report(lake, run.name, tmp_path / "r", name=False)
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL).group(1))
    expected = lake.query("SELECT count(*) FROM cluster_outliers WHERE run_id = ?", [run.run_id]).column(0)[0].as_py()
    assert data["outliers_total"] == expected >= 4 and len(data["outliers"]) == min(expected, 12)
    assert [data["samples"][o["s"]]["id"] for o in data["outliers"][:4]] == ids[-4:][::-1]
    # blob 1 sits far from the origin: its vectors all point the same way (cosine ~1), and the copy
    dups = lake.query("SELECT location_a, location_b FROM duplicate_panoramas WHERE run_id = ?", [run.run_id]).to_pylist()
    assert frozenset((ids[3], ids[7])) in {frozenset(d.values()) for d in dups}
    assert data["duplicates_total"] == len(dups) and len(data["duplicates"]) == 12
    assert all(p["cos"] >= 0.995 for p in data["duplicates"])
    assert {(r["k_coarse"], r["k_fine"]) for r in data["lineage"]} == {(2, 3)}
    assert sum(r["places"] for r in data["lineage"]) == len(ids)
    assert 'id="outlier-list"' in html and 'id="duplicate-list"' in html


def test_skip_duplicates_makes_the_same_run_without_the_search(lake, tmp_path):
    locs = ingest_sample(lake, tmp_path, n=60)
    ids = [loc["location_id"] for loc in locs]
    x = np.random.default_rng(3).standard_normal((60, 16)).astype(np.float32)
    x[1] = x[0]
    append_embeddings(lake, ids, x)
    run = cluster_map(lake, "chile", ClusterOptions(k=2, skip_duplicates=True)).run
    assert run.duplicates == 0 and lake.query("SELECT count(*) FROM cluster_duplicates").column(0)[0].as_py() == 0
    assert cluster_map(lake, "chile", ClusterOptions(k=2)).run.run_id == run.run_id  # not a run parameter: reused


def test_the_report_draws_the_lineage_as_a_sankey(nested_map):
    """One bar per cluster of each k, one band per coarse→fine pair, as wide as its places."""
    from svcluster.tasks.report.lineage_svg import lineage_svg

    lake, ids, _ = nested_map
    cluster_map(lake, "chile", ClusterOptions(ks=[3, 6]))
    rows = lake.query(load_sql("report/lineage"), {"run": lineage(lake, 3, 6)[0]["run_coarse"]}).to_pylist()
    svg = lineage_svg(rows, run_k=3)
    assert svg.startswith("<svg") and svg.count("<rect") == 3 + 6 and svg.count("<path") == 6
    assert "(k=3) — this run" in svg and "(k=6)" in svg
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"', svg)]
    assert max(heights[:3]) == pytest.approx(2 * max(heights[3:]), rel=0.02)  # a coarse bar = its two halves
    assert lineage_svg([], run_k=3) == ""
