"""Cluster runs: reproducible, versioned, stable in their numbering, and what the CLI prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from flows.cli import main
from tasks.cluster import (
    ClusterOptions,
    cluster_map,
    match_numbers,
    parse_k,
    runs,
    sampled_silhouette,
)
from tasks.errors import NotFoundError, SvclusterError
from tasks.lake import open_lake
from tasks.vectors import load_vectors
from tests.cluster_data import append_embeddings, band_matrix, ingest_sample


@pytest.fixture
def banded(lake, tmp_path):
    """A 300-location map whose embeddings form one blob per latitude band (5 bands)."""
    locs = ingest_sample(lake, tmp_path)
    matrix, truth = band_matrix(locs)
    ids = [loc["location_id"] for loc in locs]
    append_embeddings(lake, ids, matrix)
    return lake, ids, dict(zip(ids, truth))


def assignments(lake, run_id):
    rows = lake.query("SELECT location_id, cluster, distance FROM cluster_assignments WHERE run_id = ? ORDER BY location_id", [run_id]).to_pylist()
    return {r["location_id"]: r["cluster"] for r in rows}, [r["distance"] for r in rows]


def test_same_request_twice_is_one_run_and_labels_written_are_labels_reported(banded):
    lake, ids, truth = banded
    first = cluster_map(lake, "chile", ClusterOptions(k=5))
    second = cluster_map(lake, "chile", ClusterOptions(k=5))
    assert not first.run.reused and second.run.reused
    assert first.run.run_id == second.run.run_id and second.run.name == first.run.name == "chile@v1"
    assert lake.query("SELECT count(*) FROM cluster_runs").column(0)[0].as_py() == 1
    assert len(lake.table_files("cluster_runs")) == 2  # schema file + the one run row
    labels, distances = assignments(lake, first.run.run_id)
    assert len(labels) == 300 and all(d >= 0 for d in distances)
    assert np.bincount(list(labels.values()), minlength=5).tolist() == first.run.sizes == second.run.sizes
    # first run of a map: numbered by size, largest first; the bands are recovered
    assert first.run.sizes == sorted(first.run.sizes, reverse=True)
    assert adjusted_rand_score([truth[i] for i in labels], list(labels.values())) == pytest.approx(1.0)
    assert first.run.silhouette is not None and first.run.silhouette > 0.5


def test_same_data_in_another_lake_gives_the_same_labels(banded, tmp_path):
    lake, ids, _ = banded
    matrix = load_vectors(lake, "chile", "geolocal/StreetCLIP", "mean", "fp32")
    other = open_lake(str(tmp_path / "other"))
    ingest_sample(other, tmp_path / "..")
    # written in another order: the matrix order (and so the result) does not depend on it
    order = np.random.default_rng(3).permutation(len(matrix.location_ids))
    append_embeddings(other, list(matrix.location_ids[order]), matrix.matrix[order])
    a = cluster_map(lake, "chile", ClusterOptions(k=4, seed=7))
    b = cluster_map(other, "chile", ClusterOptions(k=4, seed=7))
    assert assignments(lake, a.run.run_id)[0] == assignments(other, b.run.run_id)[0]
    assert a.run.inertia == pytest.approx(b.run.inertia)


def test_different_parameters_or_embeddings_make_different_runs(banded):
    lake, ids, _ = banded
    variants = [
        ClusterOptions(k=5),
        ClusterOptions(k=4),
        ClusterOptions(k=5, seed=1),
        ClusterOptions(k=5, pca_dims=4),
        ClusterOptions(k=5, algorithm="minibatch"),
        ClusterOptions(k=5, n_init=2),
    ]
    run_ids = [cluster_map(lake, "chile", v).run.run_id for v in variants]
    assert len(set(run_ids)) == len(variants)
    # a re-embedded location is a newer embedding row: same parameters, new input, new run
    matrix = load_vectors(lake, "chile", "geolocal/StreetCLIP", "mean", "fp32")
    append_embeddings(lake, [matrix.location_ids[0]], matrix.matrix[:1] + 0.01)
    again = cluster_map(lake, "chile", ClusterOptions(k=5))
    assert again.run.run_id not in run_ids and not again.run.reused
    listed = runs(lake, "chile")
    assert [r.name for r in listed] == [f"chile@v{i}" for i in range(1, 8)]
    params = json.loads(lake.query("SELECT params FROM cluster_runs WHERE run_id = ?", [run_ids[3]]).column(0)[0].as_py())
    assert params["pca_dims"] == 4 and params["k"] == 5 and params["seed"] == 42 and len(params["fingerprint"]) == 64


def test_pca_is_recorded_and_clusters_in_the_reduced_space(banded):
    lake, ids, truth = banded
    r = cluster_map(lake, "chile", ClusterOptions(k=5, pca_dims=3))
    row = lake.query("SELECT pca_dims, pca_explained_variance FROM cluster_runs WHERE run_id = ?", [r.run.run_id]).to_pylist()[0]
    assert row["pca_dims"] == 3 and 0.5 < row["pca_explained_variance"] <= 1.0
    labels, _ = assignments(lake, r.run.run_id)
    assert adjusted_rand_score([truth[i] for i in labels], list(labels.values())) == pytest.approx(1.0)
    with pytest.raises(SvclusterError, match="--pca must be between 1 and 16"):
        cluster_map(lake, "chile", ClusterOptions(k=5, pca_dims=17))


def test_minibatch_recovers_the_blobs(banded):
    lake, ids, truth = banded
    r = cluster_map(lake, "chile", ClusterOptions(k=5, algorithm="minibatch", batch_size=64))
    assert lake.query("SELECT algorithm FROM cluster_runs").column(0).to_pylist() == ["minibatch"]
    labels, _ = assignments(lake, r.run.run_id)
    assert adjusted_rand_score([truth[i] for i in labels], list(labels.values())) > 0.95


def test_sweep_records_every_k_and_recommends_the_true_one(banded):
    lake, ids, _ = banded
    single = cluster_map(lake, "chile", ClusterOptions(k=3))
    sweep = cluster_map(lake, "chile", ClusterOptions(ks=parse_k("2..7")))
    assert [r.k for r in sweep.runs] == [2, 3, 4, 5, 6, 7]
    assert sweep.recommended_k == 5 and "highest silhouette" in sweep.recommendation
    # the k=3 run asked for before is the same run, reused, not refitted
    assert sweep.runs[1].run_id == single.run.run_id and sweep.runs[1].reused
    assert sum(not r.reused for r in sweep.runs) == 5
    table = lake.query("SELECT k, inertia, silhouette FROM cluster_sweep WHERE sweep_id = ?", [sweep.sweep_id]).to_pylist()
    assert [t["k"] for t in table] == [2, 3, 4, 5, 6, 7]
    inertias = [t["inertia"] for t in table]
    assert inertias == sorted(inertias, reverse=True)
    assert all(t["silhouette"] is not None for t in table)
    again = cluster_map(lake, "chile", ClusterOptions(ks=[2, 3, 4, 5, 6, 7]))
    assert all(r.reused for r in again.runs) and lake.query("SELECT count(*) FROM cluster_runs").column(0)[0].as_py() == 6


def test_match_numbers_undoes_a_permutation_and_handles_k_changes():
    rng = np.random.default_rng(0)
    old = rng.integers(0, 6, 500)
    perm = np.array([3, 5, 0, 1, 4, 2])
    new = perm[old]
    mapping = match_numbers(new, old, 6)
    assert np.array_equal(mapping[new], old)
    # k grows: old numbers kept, the new cluster (split off cluster 2) takes number 6
    split = old.copy()
    split[(old == 2) & (np.arange(500) % 2 == 0)] = 6
    grown = np.array([6, 2, 5, 0, 1, 3, 4])[split]  # fit labels in some other order
    m = match_numbers(grown, old, 7)
    renumbered = m[grown]
    assert set(renumbered.tolist()) == set(range(7))
    assert np.array_equal(renumbered[old != 2], old[old != 2])
    assert set(renumbered[old == 2].tolist()) == {2, 6}
    # k shrinks: numbers stay within 0..k-1 and the matched ones that fit keep theirs
    merged = np.where(old >= 4, old - 4, old)  # 4 -> 0, 5 -> 1
    m = match_numbers(merged, old, 4)
    assert sorted(m.tolist()) == [0, 1, 2, 3] and m[2] == 2 and m[3] == 3


def test_new_runs_follow_the_previous_runs_numbers(banded):
    lake, ids, truth = banded
    v1 = cluster_map(lake, "chile", ClusterOptions(k=5, seed=1))
    v2 = cluster_map(lake, "chile", ClusterOptions(k=5, seed=2, pca_dims=8))
    assert v2.run.aligned_to == "chile@v1"
    a, _ = assignments(lake, v1.run.run_id)
    b, _ = assignments(lake, v2.run.run_id)
    assert a == b  # same partition, so every location keeps its number
    v3 = cluster_map(lake, "chile", ClusterOptions(k=6, seed=3))
    c, _ = assignments(lake, v3.run.run_id)
    kept = sum(c[i] == a[i] for i in a)
    assert kept >= 300 - max(v3.run.sizes) and set(c.values()) == set(range(6))
    row = lake.query("SELECT aligned_to FROM cluster_runs WHERE run_id = ?", [v3.run.run_id]).column(0)[0].as_py()
    assert row == v2.run.run_id


def test_default_embeddings_are_chosen_helpfully(lake, tmp_path):
    locs = ingest_sample(lake, tmp_path, n=60)
    ids = [loc["location_id"] for loc in locs]
    matrix, _ = band_matrix(locs, dim=8)
    with pytest.raises(NotFoundError, match="has no embeddings yet"):
        cluster_map(lake, "chile", ClusterOptions(k=3))
    append_embeddings(lake, ids[:50], matrix[:50], model="baseline")
    r = cluster_map(lake, "chile", ClusterOptions(k=3))
    assert r.model == "baseline" and "only embeddings" in r.note and "no geolocal/StreetCLIP" in r.note
    assert r.n_locations == 50 and r.map_locations == 60
    append_embeddings(lake, ids, matrix, model="baseline", precision="fp16")
    with pytest.raises(SvclusterError, match=r"several kinds.*baseline / mean / fp16.*baseline / mean / fp32"):
        cluster_map(lake, "chile", ClusterOptions(k=3))
    assert cluster_map(lake, "chile", ClusterOptions(k=3, precision="fp16")).n_locations == 60
    with pytest.raises(NotFoundError, match="no embeddings geolocal/StreetCLIP"):
        cluster_map(lake, "chile", ClusterOptions(k=3, model="geolocal/StreetCLIP"))
    append_embeddings(lake, ids, matrix, model="geolocal/StreetCLIP", precision="bf16")
    assert cluster_map(lake, "chile", ClusterOptions(k=3)).precision == "bf16"  # the default model wins
    with pytest.raises(NotFoundError, match="no map named 'nope'"):
        cluster_map(lake, "nope", ClusterOptions(k=3))
    with pytest.raises(SvclusterError, match="k=60 needs more"):
        cluster_map(lake, "chile", ClusterOptions(k=60))


def test_silhouette_matches_scikit_learn():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 1, (150, 6)), rng.normal(4, 1, (120, 6)), rng.normal(-4, 1, (1, 6))]).astype(np.float32)
    labels = np.array([0] * 150 + [1] * 120 + [2])
    for sample in (100, 1000):
        ours = sampled_silhouette(x, labels, sample, seed=11)
        theirs = silhouette_score(x.astype(np.float64), labels, sample_size=sample if sample < len(x) else None, random_state=11)
        assert ours == pytest.approx(theirs, abs=1e-4)
    assert sampled_silhouette(x, np.zeros(len(x), int), 100, 0) is None
    assert sampled_silhouette(x, labels, 0, 0) is None


def test_parse_k():
    assert parse_k("5") == [5] and parse_k("2..4") == [2, 3, 4] and parse_k("8, 4,16") == [4, 8, 16]
    for bad in ("1", "x", "5..2", "2..2000"):
        with pytest.raises(SvclusterError, match="--k"):
            parse_k(bad)


def test_cli_cluster_runs_compare(banded, capsys):
    lake, ids, _ = banded
    root = ["--lake", lake.uri]
    assert main(root + ["cluster", "--map", "chile", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "chile@v1" in out and "new" in out and "silhouette" in out
    assert main(root + ["cluster", "--map", "chile", "--k", "5"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(root + ["--json", "cluster", "--map", "chile", "--k", "3..6", "--pca", "4"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["k"] for r in doc["runs"]] == [3, 4, 5, 6] and doc["recommended_k"] == 5
    assert main(root + ["runs", "--map", "chile"]) == 0
    out = capsys.readouterr().out
    assert all(f"chile@v{i}" in out for i in range(1, 6))
    assert main(root + ["--json", "runs"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert main(root + ["compare", "chile@v1", "chile@v4"]) == 0
    out = capsys.readouterr().out
    assert "adjusted Rand index 1.000" in out and "0 locations changed" in out
    assert main(root + ["compare", "chile@v1", "--tags"]) == 0
    assert "location-tag pairs" in capsys.readouterr().out
    assert main(root + ["compare", "chile@v1"]) == 1
    assert "either a second run or --tags" in capsys.readouterr().err
    assert main(root + ["cluster", "--map", "chile", "--k", "two"]) == 1
    assert "--k 'two'" in capsys.readouterr().err
    assert main(root + ["cluster", "--map", "chile", "--algorithm", "dbscan"]) == 1
    assert "--algorithm must be one of kmeans, minibatch" in capsys.readouterr().err


def test_vectors_cache_gives_the_same_matrix_and_follows_the_rows(banded):
    lake, ids, _ = banded
    cold = load_vectors(lake, "chile", "geolocal/StreetCLIP", "mean", "fp32")
    cached = [p for p in lake.list("cache/vectors") if p.endswith(cold.fingerprint + ".f32")]
    assert len(cached) == 1
    warm = load_vectors(lake, "chile", "geolocal/StreetCLIP", "mean", "fp32")
    assert np.array_equal(warm.matrix, cold.matrix) and list(warm.location_ids) == list(cold.location_ids)
    assert warm.matrix.flags.writeable
    # a cache file of the wrong size (an interrupted copy by hand, say) is ignored
    lake.write_bytes(cached[0], b"\0" * 12)
    assert np.array_equal(load_vectors(lake, "chile", "geolocal/StreetCLIP", "mean", "fp32").matrix, cold.matrix)
    # a newer embedding row: new fingerprint, new matrix
    append_embeddings(lake, [cold.location_ids[5]], np.full((1, cold.matrix.shape[1]), 7.0, np.float32))
    newer = load_vectors(lake, "chile", "geolocal/StreetCLIP", "mean", "fp32")
    assert newer.fingerprint != cold.fingerprint and (newer.matrix[5] == 7.0).all()
    assert np.array_equal(np.delete(newer.matrix, 5, 0), np.delete(cold.matrix, 5, 0))


def test_cluster_on_an_s3_lake(s3_lake, tmp_path):
    locs = ingest_sample(s3_lake, tmp_path, n=80)
    matrix, truth = band_matrix(locs, dim=8)
    append_embeddings(s3_lake, [loc["location_id"] for loc in locs], matrix)
    first = cluster_map(s3_lake, "chile", ClusterOptions(k=5))
    again = cluster_map(s3_lake, "chile", ClusterOptions(k=5, pca_dims=4))  # reads the cached matrix
    labels, _ = assignments(s3_lake, again.run.run_id)
    assert adjusted_rand_score([truth[locs.index(next(l for l in locs if l["location_id"] == i))] for i in labels], list(labels.values())) == pytest.approx(1.0)
    assert assignments(s3_lake, first.run.run_id)[0] == labels
