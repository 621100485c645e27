"""HDBSCAN runs (issue 19.5): density clusters on separated blobs with planted noise points,
deterministic and versioned like K-means runs; noise is cluster -1, exported as ``k{k}-noise``;
compare, export and the report take it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from svcluster.flows.cli import main
from svcluster.tasks.cluster.compare import compare_runs, compare_with_tags
from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.export.step import export_map
from tests.cluster_data import append_embeddings, ingest_sample

BLOBS, PER_BLOB, NOISE = 3, 60, 12


def blobs_with_noise(dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three tight, well-separated blobs and NOISE points scattered far from all of them (last).
    Returns (matrix, truth) with truth -1 for the noise."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:BLOBS] * 10.0
    truth = np.repeat(np.arange(BLOBS), PER_BLOB)
    points = centres[truth] + rng.standard_normal((len(truth), dim)).astype(np.float32) * 0.3
    # noise: one per direction away from every blob, each alone in its own spot
    far = rng.standard_normal((NOISE, dim)).astype(np.float32)
    far = far / np.linalg.norm(far, axis=1, keepdims=True) * 25.0 + 5.0
    return np.vstack([points, far]).astype(np.float32), np.r_[truth, np.full(NOISE, -1)]


@pytest.fixture
def dense(lake, tmp_path):
    locs = ingest_sample(lake, tmp_path, n=BLOBS * PER_BLOB + NOISE)
    ids = [loc["location_id"] for loc in locs]
    matrix, truth = blobs_with_noise()
    append_embeddings(lake, ids, matrix)
    return lake, ids, truth


def labels_of(lake, run_id: str, ids: list[str]) -> np.ndarray:
    rows = lake.query("SELECT location_id, cluster FROM cluster_assignments WHERE run_id = ?", [run_id]).to_pylist()
    got = {r["location_id"]: r["cluster"] for r in rows}
    return np.asarray([got[i] for i in ids])


def test_hdbscan_finds_the_blobs_and_leaves_the_noise_as_minus_one(dense):
    lake, ids, truth = dense
    result = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10))
    run = result.run
    assert run.k == BLOBS and run.sizes == [PER_BLOB] * BLOBS and run.noise == NOISE and not run.reused
    labels = labels_of(lake, run.run_id, ids)
    assert (labels[truth == -1] == -1).all() and (labels[truth >= 0] >= 0).all()
    assert adjusted_rand_score(truth[truth >= 0], labels[truth >= 0]) == pytest.approx(1.0)
    row = lake.query("SELECT algorithm, k, n_locations, params FROM cluster_runs WHERE run_id = ?", [run.run_id]).to_pylist()[0]
    assert (row["algorithm"], row["k"], row["n_locations"]) == ("hdbscan", BLOBS, len(ids))
    params = json.loads(row["params"])
    assert params["min_cluster_size"] == 10 and "k" not in params and "n_init" not in params
    assert run.silhouette is not None and run.silhouette > 0.9  # measured without the noise
    # every place has a distance: to its centroid, or for noise to the nearest centroid
    assert lake.query("SELECT count(*) FROM cluster_assignments WHERE run_id = ? AND distance > 0", [run.run_id]).column(0)[0].as_py() == len(ids)


def test_hdbscan_is_deterministic_and_its_min_cluster_size_makes_another_run(dense, tmp_path):
    lake, ids, _ = dense
    first = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10)).run
    again = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10)).run
    assert again.reused and again.run_id == first.run_id and again.noise == NOISE and again.k == first.k
    other = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=20)).run
    assert other.run_id != first.run_id and not other.reused and other.name == "chile@v2"
    assert (labels_of(lake, other.run_id, ids) == labels_of(lake, first.run_id, ids)).all()  # same blobs, same numbers
    # a fresh lake with the same data: the same clustering
    from svcluster.tasks.lake.store import open_lake

    (tmp_path / "again").mkdir()
    lake2 = open_lake(str(tmp_path / "again" / "lake"))
    ids2 = [loc["location_id"] for loc in ingest_sample(lake2, tmp_path / "again", n=len(ids))]
    append_embeddings(lake2, ids2, blobs_with_noise()[0])
    fresh = cluster_map(lake2, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10)).run
    assert fresh.sizes == first.sizes and (labels_of(lake2, fresh.run_id, ids2) == labels_of(lake, first.run_id, ids)).all()
    kmeans = cluster_map(lake, "chile", ClusterOptions(k=3)).run
    assert kmeans.run_id not in (first.run_id, other.run_id)


def test_hdbscan_refuses_a_k_sweep_and_a_too_small_min_cluster_size(dense):
    lake, _, _ = dense
    with pytest.raises(SvclusterError, match="--k does not apply to --algorithm hdbscan"):
        cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", k=3, ks=[3, 4]))
    with pytest.raises(SvclusterError, match="--k does not apply"):
        ClusterOptions(algorithm="hdbscan", k=7).checked()
    with pytest.raises(SvclusterError, match="--min-cluster-size must be at least 2"):
        ClusterOptions(algorithm="hdbscan", min_cluster_size=1).checked()
    with pytest.raises(SvclusterError, match="more than the 192 locations"):
        cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=500))


def test_export_tags_noise_k_noise_and_a_later_export_removes_it(dense, tmp_path):
    lake, ids, truth = dense
    run = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10)).run
    out = tmp_path / "out.json"
    result = export_map(lake, out, run=run.name)
    objects = json.loads(out.read_text())["customCoordinates"]
    tags = [o["extra"]["tags"] for o in objects]
    assert result.tagged == len(ids) and result.untagged == 0
    assert {t[-1] for t, k in zip(tags, truth) if k == -1} == {"k3-noise"}
    assert {t[-1] for t, k in zip(tags, truth) if k >= 0} == {"k3-c0", "k3-c1", "k3-c2"}
    recorded = set(lake.query("SELECT tag FROM exported_tags WHERE map = 'chile'").column(0).to_pylist())
    assert recorded == {"k3-noise", "k3-c0", "k3-c1", "k3-c2"}
    # another template for the noise; then a K-means export drops every earlier svcluster tag
    export_map(lake, out, run=run.name, noise_format="{run}-unclustered")
    tags = [o["extra"]["tags"] for o in json.loads(out.read_text())["customCoordinates"]]
    assert {t[-1] for t, k in zip(tags, truth) if k == -1} == {f"{run.name}-unclustered"}
    kmeans = cluster_map(lake, "chile", ClusterOptions(k=4)).run
    export_map(lake, out, run=kmeans.name)
    tags = [o["extra"]["tags"] for o in json.loads(out.read_text())["customCoordinates"]]
    assert all(t[-1].startswith("k4-c") and not any("noise" in x or x.startswith("k3-") for x in t) for t in tags)
    with pytest.raises(SvclusterError, match="--noise-tag"):
        export_map(lake, out, run=run.name, noise_format="k{k}-{zone}")


def test_compare_and_the_cli_take_noise(dense, capsys):
    lake, ids, _ = dense
    assert main(["--lake", lake.uri, "cluster", "--map", "chile", "--algorithm", "hdbscan", "--min-cluster-size", "10"]) == 0
    out = capsys.readouterr().out
    assert "k=3" in out and f"noise: {NOISE} places in no cluster (cluster -1)" in out
    hd = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10)).run
    km = cluster_map(lake, "chile", ClusterOptions(k=4)).run
    c = compare_runs(lake, hd.run_id, km.run_id)
    assert c.compared == len(ids) and "-1" in {p.category for p in c.purity}
    assert next(p for p in c.purity if p.category == "-1").size == NOISE
    back = compare_runs(lake, km.run_id, hd.run_id)
    assert "-1" in {p.category for p in back.spread} and back.unmatched is not None
    assert main(["--lake", lake.uri, "compare", hd.name, km.name]) == 0
    assert "-1" in capsys.readouterr().out
    vs_tags = compare_with_tags(lake, hd.run_id)  # the sample map's own band tags
    assert "-1" in {p.category for p in vs_tags.purity} and vs_tags.compared + vs_tags.only_a == len(ids)
    assert main(["--lake", lake.uri, "--json", "runs", "--map", "chile"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["algorithm"] for r in listed] == ["hdbscan", "kmeans"]


def test_report_of_an_hdbscan_run_shows_the_noise(lake, tmp_path):
    from svcluster.tasks.report.page import build_report
    from tests.report_helpers import synthetic_map, write_embeddings

    m = synthetic_map(lake, tmp_path, BLOBS * PER_BLOB + NOISE, dim=8, views=20)
    matrix, truth = blobs_with_noise()
    write_embeddings(lake, m.location_ids, matrix, "blobs")
    run = cluster_map(lake, "chile", ClusterOptions(model="blobs", algorithm="hdbscan", min_cluster_size=10)).run
    result = build_report(lake, run.name, tmp_path / "r", name=False)
    assert result.k == BLOBS
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "noise" in html


def test_the_flow_summary_counts_the_noise(dense):
    from svcluster.flows.cluster import summary_markdown

    lake, ids, _ = dense
    result = cluster_map(lake, "chile", ClusterOptions(algorithm="hdbscan", min_cluster_size=10))
    text = summary_markdown(result, result.run, None, None, None)
    assert f"| noise (-1) | {NOISE} | {100 * NOISE / len(ids):.1f}% |" in text
    assert f"| 0 | {PER_BLOB} | {100 * PER_BLOB / len(ids):.1f}% |" in text
