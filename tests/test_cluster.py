"""Cluster runs: reproducible, versioned, stable in their numbering, and what the CLI prints."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score, silhouette_score

from svcluster.flows.cli import main
from svcluster.tasks.cluster.step import (
    ClusterOptions,
    cluster_map,
    match_numbers,
    parse_k,
    runs,
    sampled_silhouette,
)
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.cluster.vectors import load_vectors
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
    assert len(lake.table_files("cluster_runs")) == 1  # the one run row
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


# ---- degenerate input (issue 15.9) ----------------------------------------------------------
@pytest.fixture
def few_distinct(lake, tmp_path):
    """60 places whose embeddings are only 3 distinct vectors (20 copies each)."""
    locs = ingest_sample(lake, tmp_path, n=60)
    ids = [loc["location_id"] for loc in locs]
    matrix = np.repeat(np.eye(8, dtype=np.float32)[:3], 20, axis=0)
    append_embeddings(lake, ids, matrix)
    return lake, ids


def test_fewer_distinct_vectors_than_k_is_a_recorded_warning_not_a_sklearn_one(few_distinct, capsys):
    import warnings

    lake, ids = few_distinct
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--lake", lake.uri, "cluster", "--map", "chile", "--k", "5"]) == 0
    assert [str(w.message) for w in caught if "sklearn" in w.filename or "distinct clusters" in str(w.message)] == []
    out = capsys.readouterr().out
    assert "warning: chile@v1 (k=5, 3 non-empty clusters): only 3 of k=5 clusters hold a place" in out
    assert "3 distinct vectors among 60 places" in out and "use a smaller --k" in out
    row = lake.query("SELECT nonempty_clusters, warnings, sizes FROM cluster_runs").to_pylist()[0]
    assert row["nonempty_clusters"] == 3 and json.loads(row["sizes"]) == [20, 20, 20, 0, 0]
    assert "only 3 of k=5" in json.loads(row["warnings"])[0]
    # reused: the warning comes back with the run
    again = cluster_map(lake, "chile", ClusterOptions(k=5))
    assert again.run.reused and again.run.warnings == json.loads(row["warnings"]) and again.run.nonempty == 3
    # and `runs` shows it, with the number of clusters that hold a place
    assert main(["--lake", lake.uri, "runs"]) == 0
    out = capsys.readouterr().out
    header, line = out.splitlines()[:2]
    assert header.split()[:4] == ["run", "run_id", "k", "clusters"]
    assert line.split()[2:4] == ["5", "3"] and "WARNING: only 3 of k=5 clusters hold a place" in line
    assert "degenerate input" in out


def test_identical_vectors_and_pca_without_variance_are_said(lake, tmp_path):
    import warnings

    locs = ingest_sample(lake, tmp_path, n=30)
    append_embeddings(lake, [loc["location_id"] for loc in locs], np.ones((30, 8), np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cluster_map(lake, "chile", ClusterOptions(k=4, pca_dims=2))
    assert [str(w.message) for w in caught] == []
    assert r.run.nonempty == 1 and r.run.sizes == [30, 0, 0, 0] and r.run.silhouette is None
    assert r.run.warnings[0] == "the vectors do not vary: PCA kept no variance"
    assert r.run.warnings[1].startswith("all 30 vectors are identical")
    row = lake.query("SELECT pca_explained_variance FROM cluster_runs").to_pylist()[0]
    assert row["pca_explained_variance"] is None  # not NaN

    from svcluster.flows.cluster import summary_markdown

    md = summary_markdown(r, r.run, None, None, None)
    assert "- k = 4 (1 non-empty clusters)" in md and "- **warning**: all 30 vectors are identical" in md


def test_a_sweep_recommends_a_k_whose_clusters_all_hold_places(few_distinct):
    lake, _ = few_distinct
    sweep = cluster_map(lake, "chile", ClusterOptions(ks=[2, 3, 4, 5]))
    assert [r.nonempty for r in sweep.runs] == [2, 3, 3, 3]
    assert sweep.recommended_k == 3


# ---- runs: header, every parameter, PCA-space metrics (issue 15.14) ---------------------------
def test_runs_lists_every_parameter_under_a_header_and_marks_pca_metrics(banded, capsys):
    lake, ids, _ = banded
    cluster_map(lake, "chile", ClusterOptions(k=5, n_init=3))
    cluster_map(lake, "chile", ClusterOptions(k=5, pca_dims=4))
    assert main(["--lake", lake.uri, "runs", "--map", "chile"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["run", "run_id", "k", "clusters", "algorithm", "n_init", "pca", "seed", "places", "inertia",
                      "silhouette", "embeddings", "method", "parent", "created", "notes"]
    plain = dict(zip(header, lines[1].split()))
    reduced = dict(zip(header, lines[2].split()))
    assert (plain["run"], plain["n_init"], plain["pca"], plain["clusters"]) == ("chile@v1", "3", "-", "5")
    assert not plain["inertia"].endswith("*") and not plain["silhouette"].endswith("*")
    assert reduced["run"] == "chile@v2" and reduced["pca"] == "4" and lines[2].split()[7].startswith("(")
    assert re.search(r"\d\.\d\*\s+\d\.\d{3}\*", lines[2]), "both metrics marked as PCA-space"
    assert any(line.startswith("*: inertia and silhouette measured in the PCA space") for line in lines)
    doc = runs(lake, "chile")
    assert (doc[0].n_init, doc[1].pca_dims, doc[1].n_init) == (3, 4, 1) and 0 < doc[1].pca_explained_variance <= 1


# ---- stale runs (issue 15.12) --------------------------------------------------------------
def test_runs_of_an_earlier_map_version_are_stale(banded, tmp_path, capsys):
    from svcluster.tasks.ingest.step import ingest_map
    from svcluster.tasks.cluster.runs import resolve_run

    lake, ids, _ = banded
    v1 = cluster_map(lake, "chile", ClusterOptions(k=5))
    version = lake.query("SELECT file_sha256 FROM maps").column(0)[0].as_py()
    assert lake.query("SELECT map_sha256 FROM cluster_runs").column(0)[0].as_py() == version
    assert not resolve_run(lake, "chile@v1").stale
    # the same file again: still the current version
    ingest_map(lake, tmp_path / "chile.json", "chile")
    assert not resolve_run(lake, "chile@v1").stale and cluster_map(lake, "chile", ClusterOptions(k=5)).run.reused
    # other content under the same name (the user added a tag of their own to one location)
    doc = json.loads((tmp_path / "chile.json").read_text(encoding="utf-8"))
    doc["customCoordinates"][0].setdefault("extra", {})["tags"] = ["mine"]
    (tmp_path / "chile2.json").write_text(json.dumps(doc), encoding="utf-8")
    ingest_map(lake, tmp_path / "chile2.json", "chile")
    old = resolve_run(lake, "chile@v1")
    assert old.stale and "earlier version of map 'chile'" in old.stale_note
    # the same request now makes a run of the new version (same vectors, same labels)
    v2 = cluster_map(lake, "chile", ClusterOptions(k=5))
    assert not v2.run.reused and v2.run.name == "chile@v2" and v2.run.sizes == v1.run.sizes
    assert not resolve_run(lake, "chile@v2").stale and resolve_run(lake, "chile@v1").stale
    assert main(["--lake", lake.uri, "runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "STALE: made on an earlier version of chile" in out[1] and "STALE" not in out[2]
    assert any(line.startswith("STALE: the map was re-ingested") for line in out)


def test_runs_recorded_before_map_checksums_are_judged_by_time(lake, tmp_path):
    """A run without map_sha256 (an older lake) is stale when its map was ingested after it."""
    from svcluster.tasks.cluster.runs import resolve_run
    from tests.cluster_data import write_labels

    locs = ingest_sample(lake, tmp_path, n=10)
    write_labels(lake, "chile", "legacy_run_0001", [loc["location_id"] for loc in locs], [0, 1] * 5, minutes=0)
    # write_labels dates its run 2026-01-01, before this ingest: a run of an earlier version
    assert resolve_run(lake, "chile@v1").stale
    lake.append("cluster_runs", pa.Table.from_pylist([{"run_id": "legacy_run_0002", "map": "chile", "k": 2, "algorithm": "kmeans",
                                                        "seed": 0, "n_locations": 10, "model": "m", "created_at": datetime.now(UTC)}]))
    assert not resolve_run(lake, "legacy_run_0002").stale


# ---- a sweep's progress in the pipeline (issue 15.14) --------------------------------------
def test_the_pipeline_cluster_task_reports_a_sweeps_progress(banded):
    from svcluster.flows.artifacts import console_progress
    from svcluster.flows.cluster import cluster_task

    lake, _, _ = banded
    seen: list[tuple] = []

    class Recorder:
        def start(self, total, description):
            seen.append(("start", total, description))

        def advance(self, amount=1):
            seen.append(("advance", amount))

        def finish(self):
            seen.append(("finish",))

    with console_progress(lambda unit: Recorder()):
        result = cluster_task.fn(lake.uri, "chile", ClusterOptions(ks=[2, 3, 4]))
    assert len(result.runs) == 3
    fitting = [e for e in seen if e[0] == "start" and "fitting" in e[2]]
    assert fitting == [("start", 3, "fitting kmeans for 3 values of k")]
    assert seen.count(("advance", 1)) >= 3 and seen[-1] == ("finish",)
