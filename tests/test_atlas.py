"""The report's atlas (issue 19.1): the projection of a run's embeddings is seeded and
deterministic, keeps planted clusters apart, is stored in the lake per vector set and reused by
the next report of the same embeddings."""

from __future__ import annotations

import numpy as np

from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.report.atlas import METHOD, project_vectors, stored_projection
from svcluster.tasks.report.data import gather_report
from tests.report_helpers import band_vectors, run_ref, synthetic_map, write_sweep


def planted(n: int = 300, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    bands = np.arange(n) % 5
    return band_vectors(bands, dim, seed=3), bands


def same_label_share(xy: np.ndarray, labels: np.ndarray, k: int = 8) -> float:
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :k]
    return float((labels[near] == labels[:, None]).mean())


def test_projection_is_seeded_and_deterministic():
    v, bands = planted()
    a, b = project_vectors(v, seed=7), project_vectors(v.copy(), seed=7)
    assert a.shape == (300, 2) and a.dtype == np.float32
    assert np.array_equal(a, b), "same vectors and seed: the very same coordinates"
    assert not np.allclose(a, project_vectors(v, seed=8)), "the seed matters"
    assert np.abs(a).max() <= 1.0 + 1e-6
    assert same_label_share(a, bands) > 0.95, "planted clusters stay apart in 2-D"


def test_sampled_fit_places_the_rest_deterministically(monkeypatch):
    """A large run's path, scaled down: the PCA fitted on a sample, t-SNE on another, the rest placed."""
    from svcluster.tasks.report import atlas

    monkeypatch.setattr(atlas, "PCA_FIT_LIMIT", 250)
    v, bands = planted(400)
    a, b = project_vectors(v, seed=1, fit_limit=150), project_vectors(v, seed=1, fit_limit=150)
    assert np.array_equal(a, b) and np.isfinite(a).all()
    assert same_label_share(a, bands) > 0.9, "places outside the fitted sample land by their neighbours"


def test_tiny_inputs_still_get_coordinates():
    assert project_vectors(np.zeros((0, 8), np.float32)).shape == (0, 2)
    assert project_vectors(np.eye(3, 8, dtype=np.float32)).shape == (3, 2)
    assert np.isfinite(project_vectors(np.ones((12, 8), np.float32))).all()  # identical vectors


def test_projection_is_stored_per_vector_set_and_reused(tmp_path):
    lake = open_lake(str(tmp_path / "lake"))
    m = synthetic_map(lake, tmp_path, 160, dim=16, views=10)
    runs = write_sweep(lake, m, ks=(4, 5))
    first = gather_report(lake, run_ref(lake, runs[5]))
    assert first.atlas is not None and not first.atlas.projection.reused
    files = [f for f in lake.table_files("projections") if "/part-" in f]
    assert len(files) == 1
    rows = lake.query("SELECT vector_set, count(*) AS n, any_value(method) AS method FROM projections GROUP BY ALL").to_pylist()
    assert rows == [{"vector_set": first.atlas.projection.vector_set, "n": 160, "method": METHOD}]
    # another run (k=4) of the same embeddings, and the same run again: read, not recomputed
    for run in (runs[4], runs[5]):
        again = gather_report(lake, run_ref(lake, run))
        assert again.atlas.projection.reused
        assert np.array_equal(again.atlas.projection.xy, first.atlas.projection.xy)
    assert [f for f in lake.table_files("projections") if "/part-" in f] == files
    stored = stored_projection(lake, first.atlas.projection.vector_set, first.atlas.projection.location_ids)
    assert np.array_equal(stored, first.atlas.projection.xy)
    # every report point has its place in the atlas
    assert sorted(first.atlas.rows.tolist()) == list(range(160))
    assert all(p is not None for p in first.atlas.pano) and len(first.atlas.heading) == 160
