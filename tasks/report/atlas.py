"""The report's atlas: every place of a run as a point of a 2-D map of the embedding space.

The coordinates are a projection of the run's (L2-normalised) embeddings: PCA to 50 dimensions
(sklearn, randomized SVD, seeded), then t-SNE with openTSNE: its "auto" gradients (Barnes-Hut
below 10,000 points, where the fixed cost of FFT's grid dominates; FFT interpolation above), PCA
initialisation, 125 early-exaggeration + 250 iterations, ``random_state=seed`` and one thread (the
configuration tests/test_atlas.py checks: the same vectors and seed give the very same
coordinates; openTSNE does not promise that of its threaded gradients).

Why this method (docs/report.md, "Atlas", has the figures it was chosen by): PCA straight to 2-D is
instant but overlaps clusters that differ in directions other than the top two, so a place's
neighbours on the atlas are often of another cluster; t-SNE keeps local neighbourhoods (what the
atlas is read for: which places look alike) at a cost of tens of seconds, paid once per vector set
because the result is stored. umap-learn (similar quality) would add numba and pynndescent.

Past ``FIT_LIMIT`` places (5,000) t-SNE is fitted on a seeded sample of that size and every other
place is put where openTSNE's ``prepare_partial(initialization="median")`` would start it: at the
median position of its 10 nearest sampled neighbours (in the PCA space) in the fitted map, found
by exact brute force without openTSNE's affinities (no further optimisation). Past 20,000 places
the PCA too is fitted on a seeded sample. So a 100,000-place run costs the fit of 5,000 plus one
nearest-neighbour query per other place.

A projection is stored in the lake's ``projections`` table keyed by (vector set, location_id):
the vector set is the fingerprint of the embeddings the run clustered (``cluster_runs.fingerprint``,
see ``svcluster.tasks.cluster.vectors.fingerprint_keys``) with the model, pooling and precision, so
every run of the same embeddings (k=5, k=18, a sweep) shares one projection and a second report
reads it instead of computing it again.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.errors import ReadOnlyLakeError
from svcluster.tasks.lake.store import Lake, now_utc

METHOD = "pca50-opentsne"
SEED = 42
PCA_DIMS = 50
FIT_LIMIT = 5_000
PCA_FIT_LIMIT = 20_000  # the PCA is fitted on a seeded sample of this many and applied to all
PLACE_NEIGHBOURS = 10
PERPLEXITY = 30.0
EXAGGERATION_ITER = 125  # half openTSNE's defaults (250 + 500): the same separation, half the time
ITERATIONS = 250


@dataclass
class Projection:
    """2-D coordinates of places: row ``i`` of ``xy`` (float32, n x 2) is ``location_ids[i]``."""

    vector_set: str
    location_ids: list[str]
    xy: np.ndarray
    method: str
    seed: int
    reused: bool  # read from the lake, not computed by this call
    seconds: float  # time to compute (or to read) it


def vector_set_key(fingerprint: str | None, model: str | None, pooling: str | None, precision: str | None,
                   location_ids: list[str], vectors: np.ndarray) -> str:
    """The name of a vector set: its embeddings fingerprint with the model, pooling and precision;
    without a recorded fingerprint, a hash of the places and their vectors themselves."""
    if fingerprint:
        return hashlib.sha256("\x1e".join([fingerprint, model or "", pooling or "mean", precision or "fp32"]).encode()).hexdigest()[:32]
    h = hashlib.sha256("\x1e".join(location_ids).encode())
    h.update(np.ascontiguousarray(vectors, np.float32).tobytes())
    return "vectors-" + h.hexdigest()[:24]


def project_vectors(vectors: np.ndarray, seed: int = SEED, fit_limit: int = FIT_LIMIT) -> np.ndarray:
    """2-D coordinates (float32, n x 2, scaled into [-1, 1]) of the rows of ``vectors``."""
    x = np.asarray(vectors, np.float32)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 8:  # too few for t-SNE's neighbourhoods: a plain PCA
        return _scaled(np.nan_to_num(_pca(x, 2, seed)))
    rng = np.random.default_rng(seed)
    pca_rows = np.sort(rng.choice(n, PCA_FIT_LIMIT, replace=False)) if n > PCA_FIT_LIMIT else None
    reduced = _pca(x, min(PCA_DIMS, x.shape[1], n), seed, pca_rows)
    if not float(reduced[:, 0].std()) > 1e-9:  # all vectors (nearly) the same: one spot
        return np.zeros((n, 2), np.float32)
    fit = np.sort(rng.choice(n, fit_limit, replace=False)) if n > fit_limit else np.arange(n)
    embedding = _tsne(reduced[fit], seed)
    xy = np.empty((n, 2), np.float64)
    xy[fit] = np.asarray(embedding)
    if len(fit) < n:
        rest = np.setdiff1d(np.arange(n), fit)
        xy[rest] = place_by_neighbours(reduced[rest], reduced[fit], xy[fit])
    return _scaled(xy)


def place_by_neighbours(rest: np.ndarray, fitted: np.ndarray, fitted_xy: np.ndarray, k: int = PLACE_NEIGHBOURS,
                        chunk: int = 4096) -> np.ndarray:
    """Each row of ``rest`` at the median 2-D position of its ``k`` nearest rows of ``fitted``
    (Euclidean, in the PCA space): openTSNE's "median" initialisation of new points, computed
    here by exact brute force in chunks (no affinities: the points are not optimised further)."""
    k = min(k, len(fitted))
    f = fitted.astype(np.float32)
    f2 = (f * f).sum(axis=1)
    out = np.empty((len(rest), 2), np.float64)
    for a in range(0, len(rest), chunk):
        q = rest[a : a + chunk].astype(np.float32)
        d = f2[None, :] - 2.0 * (q @ f.T)  # + |q|^2, the same for every candidate of a row
        near = np.argpartition(d, k - 1, axis=1)[:, :k] if k < len(f) else np.broadcast_to(np.arange(len(f)), (len(q), len(f)))
        out[a : a + chunk] = np.median(fitted_xy[near], axis=1)
    return out


def _pca(x: np.ndarray, dims: int, seed: int, fit_rows: np.ndarray | None = None) -> np.ndarray:
    """``x`` reduced to ``dims`` principal components (fitted on ``fit_rows`` when given)."""
    from sklearn.decomposition import PCA

    dims = max(1, min(dims, x.shape[1], len(x)))
    pca = PCA(n_components=dims, svd_solver="randomized" if dims < min(x.shape) else "full", random_state=seed)
    out = pca.fit(x[fit_rows]).transform(x) if fit_rows is not None else pca.fit_transform(x)
    if out.shape[1] < 2:
        out = np.c_[out, np.zeros((len(out), 2 - out.shape[1]))]
    return out.astype(np.float32)


def _tsne(x: np.ndarray, seed: int):
    from openTSNE import TSNE

    perplexity = min(PERPLEXITY, max(1.0, (len(x) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, initialization="pca", metric="euclidean", n_jobs=1,
                early_exaggeration_iter=EXAGGERATION_ITER, n_iter=ITERATIONS,
                random_state=seed, verbose=False).fit(x)


def _scaled(xy: np.ndarray) -> np.ndarray:
    """Centred and scaled so the farthest coordinate is 1 (the page fits it to its canvas)."""
    xy = np.asarray(xy, np.float64)
    xy = xy - xy.mean(axis=0)
    span = float(np.abs(xy).max()) if xy.size else 0.0
    return (xy / span if span > 0 else xy).astype(np.float32)


# ---- stored in the lake --------------------------------------------------------------------
def stored_projection(lake: Lake, vector_set: str, location_ids: list[str], method: str = METHOD, seed: int = SEED) -> np.ndarray | None:
    """The stored coordinates of these places in ``vector_set`` (rows in their order), or None
    when any of them has none."""
    t = lake.query(load_sql("report/projection"), {"vector_set": vector_set, "method": method, "seed": seed})
    if t.num_rows < len(location_ids):
        return None
    row = {lid: i for i, lid in enumerate(t.column("location_id").to_pylist())}
    at = np.asarray([row.get(lid, -1) for lid in location_ids], np.int64)
    if (at < 0).any():
        return None
    xy = np.c_[t.column("x").to_numpy(zero_copy_only=False), t.column("y").to_numpy(zero_copy_only=False)]
    return xy[at].astype(np.float32)


def write_projection(lake: Lake, vector_set: str, location_ids: list[str], xy: np.ndarray, method: str = METHOD, seed: int = SEED) -> None:
    n = len(location_ids)
    lake.append(
        "projections",
        pa.table({
            "vector_set": pa.array([vector_set] * n, pa.string()),
            "location_id": pa.array(location_ids, pa.string()),
            "x": pa.array(xy[:, 0], pa.float32()),
            "y": pa.array(xy[:, 1], pa.float32()),
            "method": pa.array([method] * n, pa.string()),
            "seed": pa.array([seed] * n, pa.int64()),
            "written_at": pa.array([now_utc()] * n, pa.timestamp("us", tz="UTC")),
        }),
    )


def atlas_projection(lake: Lake, vector_set: str, location_ids: list[str], vectors: np.ndarray, seed: int = SEED) -> Projection:
    """The places' coordinates in the atlas: read from the lake when this vector set was projected
    before (with this method and seed), else computed and stored."""
    t0 = time.perf_counter()
    xy = stored_projection(lake, vector_set, location_ids, METHOD, seed)
    if xy is not None:
        return Projection(vector_set, location_ids, xy, METHOD, seed, True, time.perf_counter() - t0)
    xy = project_vectors(vectors, seed)
    try:
        write_projection(lake, vector_set, location_ids, xy, METHOD, seed)
    except ReadOnlyLakeError:  # a lake the user cannot write still gets its atlas, just not kept
        pass
    return Projection(vector_set, location_ids, xy, METHOD, seed, False, time.perf_counter() - t0)


# ---- what the report's page gets -------------------------------------------------------------
@dataclass
class AtlasData:
    """The atlas of one report: the projection, and per point of the report (``Points`` order)
    its row in it and the camera and pano id its download writes."""

    projection: Projection
    rows: np.ndarray  # int64, per report point: its row in projection.xy
    heading: list[float | None]
    pitch: list[float | None]
    zoom: list[float | None]
    pano: list[str | None]


def gather_atlas(lake: Lake, run: dict, point_ids: list[str], vector_ids: list[str], vectors: np.ndarray,
                 rows: np.ndarray | None) -> tuple[AtlasData | None, str]:
    """The atlas of a run (``rows``: each report point's row in ``vectors``), or None and why not."""
    if rows is None or not len(vector_ids):
        return None, "no atlas: the run's embeddings are not in the lake"
    key = vector_set_key(run.get("fingerprint"), run.get("model"), run.get("pooling"), run.get("precision"), vector_ids, vectors)
    projection = atlas_projection(lake, key, list(vector_ids), vectors)
    placed = lake.query(load_sql("report/atlas_places"), {"run": run["run_id"]}).to_pylist()
    by_id = {r["location_id"]: r for r in placed}
    empty: dict = {}
    obj = [by_id.get(lid, empty) for lid in point_ids]

    def col(name: str, digits: int | None = 2) -> list:
        return [None if o.get(name) is None else (round(float(o[name]), digits) if digits is not None else o[name]) for o in obj]

    data = AtlasData(projection, np.asarray(rows, np.int64), col("heading"), col("pitch"), col("zoom"), col("pano_id", None))
    return data, ""


def atlas_page_data(atlas: AtlasData | None, map_name: str, k: int) -> dict | None:
    """The page's ``atlas`` JSON: x, y per point (in [-1, 1]) and the download's fields."""
    if atlas is None:
        return None
    p = atlas.projection
    xy = np.round(p.xy[atlas.rows].astype(np.float64), 4)
    how = f"read from the lake in {p.seconds:.2f} s" if p.reused else f"computed in {p.seconds:.1f} s and kept in the lake"
    from svcluster.tasks.export.step import DEFAULT_TAG_FORMAT

    return {
        "x": xy[:, 0].tolist(),
        "y": xy[:, 1].tolist(),
        "heading": atlas.heading,
        "pitch": atlas.pitch,
        "zoom": atlas.zoom,
        "pano": atlas.pano,
        "tag": DEFAULT_TAG_FORMAT.replace("{k}", str(k)),  # {cluster}: filled in per place by the page
        "map_name": map_name,
        "file_name": f"{map_name}-atlas-selection.json",
        "method": p.method,
        "seed": p.seed,
        "reused": p.reused,
        "note": (f"{p.method} (PCA to {PCA_DIMS} dimensions, then t-SNE by openTSNE, seed {p.seed}) of the run's embeddings, "
                 f"vector set {p.vector_set[:12]}: {how}. Near points look alike; distances between far clusters mean little."),
    }
