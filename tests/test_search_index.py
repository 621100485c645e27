"""The approximate search index (issue 18.3): it agrees with exact search on clustered vectors,
is stored in the lake and reused, is rebuilt when the vectors change, and is used only above
the size threshold (the result says which)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.search import index as search_index
from svcluster.tasks.search.index import IndexParams, build_index, index_key
from svcluster.tasks.search.step import rank, similar
from tests.cluster_data import append_embeddings, ingest_sample

DIM = 32


def clustered(n: int, clusters: int = 40, noise: float = 0.6, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (the same centres whatever ``seed``, which
    draws the points), as place embeddings are."""
    centres = np.random.default_rng(1000 + clusters).standard_normal((clusters, DIM))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True)
def fresh_memory():
    search_index.forget_indexes()
    yield
    search_index.forget_indexes()


def test_index_recall_against_exact_on_clustered_vectors():
    x = clustered(6000, noise=1.0)
    queries = clustered(60, noise=1.0, seed=1)  # fresh draws around the same centres
    params = IndexParams.for_rows(len(x))
    assert params.nlist == 77 and params.nprobe == 8
    idx = build_index(x, index_key("fp", x.shape, params), params).attach(x)
    assert idx.offsets[-1] == len(x) and sorted(idx.order.tolist()) == list(range(len(x)))
    recalls = []
    for q in queries:
        rows, scores = idx.search(q, 10)
        exact_rows, exact_scores = rank(x, q, 10)
        recalls.append(len(set(rows.tolist()) & set(exact_rows.tolist())) / 10)
        np.testing.assert_allclose(scores, x[rows] @ q, rtol=1e-5, atol=1e-6)  # found rows keep their exact score
        assert np.all(np.diff(scores) <= 0)
    assert np.mean(recalls) >= 0.95
    # rows grouped by list (a process that searches again) find exactly what the gather found
    idx.group()
    for q in queries[:10]:
        rows, scores = idx.search(q, 10)
        assert np.array_equal(rows, build_index(x, "again", params).attach(x).search(q, 10)[0])


def test_index_is_deterministic_leaves_out_excluded_rows_and_probes_more_when_short():
    x = clustered(3000, seed=3)
    params = IndexParams(nlist=50, nprobe=1)
    a = build_index(x, "a", params).attach(x)
    b = build_index(x, "b", params).attach(x)
    assert np.array_equal(a.order, b.order) and np.array_equal(a.centroids, b.centroids)
    q = x[7]
    rows, _ = a.search(q, 5)
    assert rows[0] == 7
    exclude = np.zeros(len(x), bool)
    exclude[7] = True
    rows, _ = a.search(q, 5, exclude)
    assert 7 not in rows.tolist() and len(rows) == 5
    # more rows asked for than one list holds: more lists are probed until there are enough
    rows, _ = a.search(q, 2000)
    assert len(rows) == 2000 and len(set(rows.tolist())) == 2000


def grown_lake(lake, tmp_path, n=240):
    """A map of ``n`` places with clustered embeddings; returns (ids, matrix)."""
    ids = [r["location_id"] for r in ingest_sample(lake, tmp_path, n=n, name="big")]
    ids = sorted(set(ids))
    x = clustered(len(ids), clusters=6, seed=5)
    append_embeddings(lake, ids, x)
    return ids, x


def test_search_uses_exact_below_the_threshold_and_the_index_above(lake, tmp_path, monkeypatch, capsys):
    ids, x = grown_lake(lake, tmp_path)
    monkeypatch.setattr(search_index, "EXACT_MAX_ROWS", len(ids))
    exact = similar(lake, ids[0], map_name="big")
    assert exact.method == "exact" and exact.index.method == "exact" and not lake.list("cache/search_index")
    monkeypatch.setattr(search_index, "EXACT_MAX_ROWS", len(ids) - 1)
    approx = similar(lake, ids[0], map_name="big")
    assert approx.method == "ivf" and approx.index.source == "built" and approx.index.lists == 15
    # on clustered vectors the index finds the same places as exact search, in the same order
    assert [h.location_id for h in approx.hits][:10] == [h.location_id for h in exact.hits][:10]
    assert ids[0] not in [h.location_id for h in approx.hits]
    # the result says which: in JSON, and in the printed header
    assert main(["--lake", lake.uri, "--json", "similar", ids[0], "--map", "big"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "ivf" and doc["index"]["source"] == "memory" and doc["index"]["index"] == approx.index.index
    assert main(["--lake", lake.uri, "similar", ids[0], "--map", "big"]) == 0
    assert "approximate index (ivf, " in capsys.readouterr().out


def test_index_is_stored_reused_and_rebuilt_when_the_vectors_change(lake, tmp_path, monkeypatch):
    ids, x = grown_lake(lake, tmp_path)
    monkeypatch.setattr(search_index, "EXACT_MAX_ROWS", 10)
    first = similar(lake, ids[3], map_name="big")
    assert first.index.source == "built"
    stored = lake.list("cache/search_index")
    assert len(stored) == 1 and first.index.index in stored[0]
    search_index.forget_indexes()  # a new process: the index comes from the lake
    again = similar(lake, ids[3], map_name="big")
    assert again.index.source == "lake" and again.index.index == first.index.index
    assert [h.location_id for h in again.hits] == [h.location_id for h in first.hits]
    # re-embedding places gives a new vector set: a new index, never the stale one
    moved = x[:5][::-1].copy()  # the first five places swap their embeddings
    append_embeddings(lake, ids[:5], moved)
    after = similar(lake, ids[3], map_name="big")
    assert after.index.source == "built" and after.index.index != first.index.index
    assert len(lake.list("cache/search_index")) == 2
    want = np.vstack([moved, x[5:]])
    exact_rows, _ = rank(want, want[3], 10, np.arange(len(ids)) == 3)
    assert [h.location_id for h in after.hits][:10] == [ids[i] for i in exact_rows]


def test_a_damaged_stored_index_is_built_again(lake, tmp_path, monkeypatch):
    ids, _ = grown_lake(lake, tmp_path)
    monkeypatch.setattr(search_index, "EXACT_MAX_ROWS", 10)
    first = similar(lake, ids[1], map_name="big")
    (stored,) = lake.list("cache/search_index")
    lake.write_bytes(stored, b"not an index")
    search_index.forget_indexes()
    again = similar(lake, ids[1], map_name="big")
    assert again.index.source == "built" and [h.location_id for h in again.hits] == [h.location_id for h in first.hits]
    search_index.forget_indexes()
    assert similar(lake, ids[1], map_name="big").index.source == "lake"  # stored whole again


def test_a_lake_that_cannot_store_the_index_still_searches(lake, tmp_path, monkeypatch, caplog):
    from svcluster.tasks.errors import ReadOnlyLakeError

    ids, _ = grown_lake(lake, tmp_path)
    monkeypatch.setattr(search_index, "EXACT_MAX_ROWS", 10)

    write_bytes = lake.write_bytes

    def refuse(relpath, data):  # the index's folder cannot be written (full, or read-only there)
        if relpath.startswith("cache/search_index/"):
            raise ReadOnlyLakeError(f"the lake is read-only here: it could not write {relpath}")
        return write_bytes(relpath, data)

    monkeypatch.setattr(lake, "write_bytes", refuse)
    found = similar(lake, ids[2], map_name="big")
    assert found.method == "ivf" and found.index.source == "built" and len(found.hits) == 20
    assert "could not store the search index" in caplog.text and not lake.list("cache/search_index")
