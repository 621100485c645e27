"""Clustering a map's embeddings into versioned, reproducible runs.

A run is K-means (or MiniBatchKMeans for large maps, or HDBSCAN, which finds k itself and
leaves noise as cluster -1) over the latest embedding of every location of a map that has one,
optionally after a PCA fitted on the same vectors. Its
``run_id`` is a hash of the input embeddings' fingerprint and every parameter, so asking for the
same clustering twice finds the run already in the lake and reuses it. Each new run writes its
``cluster_runs`` row with its assignments and near-duplicate pairs in it, one commit, so a crash
leaves the whole run or nothing.

Cluster numbers are stable across versions: a new run of a map numbers its clusters to match
the map's previous run (its latest with the same k, else its latest) as closely as possible
(maximum-overlap matching on the contingency table); a map's first run numbers its clusters by
size, largest first. See docs/clustering.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
import warnings as pywarnings
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np
import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Connection, Lake, now_utc
from svcluster.tasks.options import option
from svcluster.tasks.progress import NullProgress, Progress
from svcluster.tasks.embed.models import DEFAULT_MODEL
from svcluster.tasks.cluster.duplicates import DuplicatePairs, near_duplicates
from svcluster.tasks.cluster.runs import commit_run
from svcluster.tasks.cluster.vectors import EmbeddingChoice, EmbeddingSet, Vectors, embedding_choices, embedding_set, load_selected

DEFAULT_POOLING = "mean"
ALGORITHMS = ("kmeans", "minibatch", "hdbscan")
NOISE = -1  # the cluster number of the places HDBSCAN leaves unclustered
RUN_FORMAT = "svcluster-cluster/1"  # bump when the meaning of a parameter changes
MAX_K = 1000
DEFAULT_K = 5
# The silhouette costs O(sample^2 x dims), so it is computed on a seeded sample of locations (the
# same for every k of a sweep); why this size: docs/clustering.md, 'Clustering a map'.
SILHOUETTE_SAMPLE = 3000
GROW_MODES = ("assign", "recluster", "auto")  # svcluster run --grow (tasks/cluster/grow.py)


@dataclass
class ClusterOptions:
    """What to cluster and how. ``ks`` (a k sweep) wins over ``k`` when given.

    ``model``/``pooling``/``precision`` left as None pick the map's embeddings: the only kind
    there is, else ``geolocal/StreetCLIP`` with mean pooling when present; otherwise an error
    lists what exists.
    """

    model: str | None = option(None, "--model", f"Embedding model [default: the map's only one, else {DEFAULT_MODEL}].", run=False)
    pooling: str | None = option(None, "--pooling", "mean | stitched [default: mean when there].", run=False)
    precision: str | None = option(None, "--precision", "fp32 | bf16 | fp16 | int8 | int8-static [default: the only one there].", run=False)
    k: int = option(
        DEFAULT_K, "--k", "Number of clusters: 5, a sweep 2..20, or a list 4,8,16.", text=str, parse=lambda text: k_fields(parse_k(text)), shown=str
    )
    ks: list[int] | None = option(None, None, "sweep these k values; each is its own run (wins over k)", cli=False, run=False)
    pca_dims: int | None = option(None, "--pca", "Reduce the vectors to DIMS with PCA first.")
    algorithm: str = option("kmeans", "--algorithm", "kmeans | minibatch (large maps) | hdbscan (density: finds k, leaves noise as cluster -1).")
    min_cluster_size: int = option(10, "--min-cluster-size", "HDBSCAN only: the fewest places a cluster may hold.")
    seed: int = option(42, "--seed", "Random seed (k-means++ init, PCA, silhouette sample).")
    skip_duplicates: bool = option(
        False, "--skip-duplicates",
        "Do not look for near-identical panoramas within each cluster (duplicate_panoramas: it costs about the sum of the squared cluster sizes x dims).",
    )  # fmt: skip
    silhouette_sample: int = option(SILHOUETTE_SAMPLE, "--silhouette-sample", "Locations the silhouette is computed on (0: skip).", flow=False)
    n_init: int = option(1, "--n-init", "K-means restarts; the best is kept.", flow=False)
    max_iter: int = 300
    batch_size: int = 4096  # MiniBatchKMeans only
    grow: str = option(
        "recluster", "--grow",
        "A grown map: assign its new places to the latest run's centroids, recluster, or auto (assign under --grow-share).",
        cli=False,
    )  # fmt: skip
    grow_share: float = option(0.2, "--grow-share", "With --grow auto: assign while new places are under this share (0-1).", cli=False)

    def checked(self) -> "ClusterOptions":
        """These options, or SvclusterError naming the bad option (what the data decides, k
        below the number of locations and PCA below the vector size, is checked by the step)."""
        if self.pca_dims is not None and self.pca_dims < 1:
            raise SvclusterError(f"--pca must be at least 1, not {self.pca_dims}")
        check_options(self, n=sys.maxsize, dim=sys.maxsize)
        if self.grow not in GROW_MODES:
            raise SvclusterError(f"--grow must be one of {', '.join(GROW_MODES)}, not {self.grow!r}")
        if not 0 <= self.grow_share <= 1:
            raise SvclusterError(f"--grow-share must be a share from 0 to 1, not {self.grow_share:g}")
        return self

    def k_values(self) -> list[int]:
        return sorted(set(self.ks)) if self.ks else [self.k]

    @property
    def finds_k(self) -> bool:
        """True for HDBSCAN: the number of clusters is what the fit finds, not a parameter."""
        return self.algorithm == "hdbscan"


@dataclass(frozen=True)
class RunSummary:
    """One run of a request: new or reused, its metrics and its cluster sizes by number."""

    run_id: str
    name: str
    k: int
    inertia: float | None
    silhouette: float | None
    sizes: list[int]
    reused: bool
    aligned_to: str | None = None  # name of the run whose numbering this run follows
    warnings: list[str] = field(default_factory=list)  # what was odd about the input (degenerate data)
    noise: int = 0  # places HDBSCAN left unclustered (cluster -1; not in ``sizes``)
    duplicates: int = 0  # pairs of near-identical panoramas found in its clusters (duplicate_panoramas)

    @property
    def nonempty(self) -> int:
        """Clusters that hold a location (fewer than k when the input is degenerate)."""
        return sum(1 for n in self.sizes if n)


@dataclass(frozen=True)
class ClusterResult:
    """What ``cluster_map`` did: which embeddings it used and the run(s) it made or reused."""

    map: str
    model: str
    pooling: str
    precision: str
    n_locations: int  # locations clustered (those with an embedding)
    map_locations: int  # locations of the map
    note: str | None  # how the embeddings were chosen when the request left that open
    runs: list[RunSummary]
    sweep_id: str | None
    recommended_k: int | None = None  # for a sweep: highest silhouette
    recommendation: str | None = None
    grow_note: str | None = None  # svcluster run --grow: whether new places were assigned or clustered, and why

    @property
    def run(self) -> RunSummary:
        return self.runs[0]


@dataclass(frozen=True)
class RunInfo:
    """A committed run as ``svcluster runs`` lists it."""

    name: str
    run_id: str
    map: str
    model: str
    pooling: str | None
    precision: str | None
    algorithm: str
    k: int
    pca_dims: int | None
    seed: int
    n_init: int | None
    max_iter: int | None
    pca_explained_variance: float | None
    n_locations: int
    nonempty_clusters: int | None
    inertia: float | None  # in the clustered space: PCA space when pca_dims is set
    silhouette: float | None  # likewise
    aligned_to_name: str | None
    sweep_id: str | None
    warnings: list[str]
    method: str  # cluster (fitted) | assign (new places given the parent's centroids)
    parent_run_id: str | None  # assign: the run whose centroids and numbers it kept
    parent_name: str | None  # that run's MAP@vN
    stale: bool  # made on an earlier version of its map (re-ingested with other content since)
    created_at: object
    duplicates: int = 0  # pairs of near-identical panoramas (duplicate_panoramas)


@dataclass
class Fit:
    """One fitted clustering before it is written: labels already renumbered."""

    k: int
    labels: np.ndarray  # int32, per matrix row
    distances: np.ndarray  # float32, to the own centroid (in the clustered space)
    inertia: float
    n_iter: int
    silhouette: float | None = None
    aligned_to: str | None = None
    aligned_name: str | None = None
    sizes: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def nonempty(self) -> int:
        return sum(1 for n in self.sizes if n)

    @property
    def noise(self) -> int:
        return int(np.count_nonzero(self.labels < 0))


# ---- choosing the embeddings ---------------------------------------------------------------
def k_fields(ks: list[int]) -> dict:
    """The ``k`` and ``ks`` fields of one ``--k`` value (a sweep when it names several)."""
    return {"k": ks[0], "ks": ks if len(ks) > 1 else None}


def parse_k(text: str) -> list[int]:
    """``"5"`` -> [5]; ``"2..20"`` -> [2, ..., 20]; ``"4,8,16"`` -> [4, 8, 16]."""
    text = str(text).strip()
    m = re.fullmatch(r"(\d+)\s*\.\.\s*(\d+)", text)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise SvclusterError(f"--k {text}: the range must go up (e.g. 2..20)")
        ks = list(range(lo, hi + 1))
    elif re.fullmatch(r"\d+(\s*,\s*\d+)*", text):
        ks = sorted({int(p) for p in text.split(",")})
    else:
        raise SvclusterError(f"--k {text!r}: give a number (5), a range (2..20) or a list (4,8,16)")
    for k in ks:
        if not 2 <= k <= MAX_K:
            raise SvclusterError(f"--k {text}: k must be between 2 and {MAX_K}")
    return ks


def map_checksum(con: Connection, map_name: str) -> str | None:
    """The checksum (``maps.file_sha256``) of the map's current version; NotFoundError if the
    map was never ingested."""
    rows = con.sql(load_sql("cluster/map_exists"), params={"map": map_name}).fetchall()
    if not rows:
        raise NotFoundError(f"no map named {map_name!r} in the lake (ingest it first)")
    return rows[0][0]


def choose_embeddings(con: Connection, map_name: str, options: ClusterOptions) -> tuple[EmbeddingChoice, str | None]:
    """The (model, pooling, precision) to cluster, and a note when the choice was implicit."""
    map_checksum(con, map_name)
    choices = embedding_choices(con, map_name)
    if not choices:
        raise NotFoundError(f"map {map_name!r} has no embeddings yet (run `svcluster embed --map {map_name}`)")
    fits = [
        c
        for c in choices
        if (options.model is None or c.model == options.model)
        and (options.pooling is None or c.pooling == options.pooling)
        and (options.precision is None or c.precision == options.precision)
    ]
    listing = "; ".join(f"{c.label} ({c.locations} locations)" for c in choices)
    if not fits:
        asked = " / ".join(v or "*" for v in (options.model, options.pooling, options.precision))
        raise NotFoundError(f"map {map_name!r} has no embeddings {asked}; it has: {listing}")
    if len(fits) > 1 and options.model is None and any(c.model == DEFAULT_MODEL for c in fits):
        fits = [c for c in fits if c.model == DEFAULT_MODEL]
    if len(fits) > 1 and options.pooling is None and any(c.pooling == DEFAULT_POOLING for c in fits):
        fits = [c for c in fits if c.pooling == DEFAULT_POOLING]
    if len(fits) > 1:
        raise SvclusterError(
            f"map {map_name!r} has several kinds of embeddings: {listing}; choose with --model, --pooling, --precision"
        )
    chosen = fits[0]
    implicit = options.model is None or options.pooling is None or options.precision is None
    note = None
    if implicit:
        only = " (the only embeddings of this map)" if len(choices) == 1 else ""
        note = f"using embeddings {chosen.label}{only}"
        if options.model is None and chosen.model != DEFAULT_MODEL:
            note += f"; no {DEFAULT_MODEL} embeddings exist for this map"
    return chosen, note


def check_options(options: ClusterOptions, n: int, dim: int) -> None:
    """Refuse parameters that cannot work on ``n`` vectors of size ``dim``, with a clear reason."""
    if options.algorithm not in ALGORITHMS:
        raise SvclusterError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, not {options.algorithm!r}")
    if not 0 <= options.seed < 2**32:
        raise SvclusterError("--seed must be between 0 and 2**32 - 1")
    if options.min_cluster_size < 2:
        raise SvclusterError(f"--min-cluster-size must be at least 2, not {options.min_cluster_size}")
    if options.finds_k:
        if options.ks or options.k != DEFAULT_K:
            raise SvclusterError("--k does not apply to --algorithm hdbscan: it finds the number of clusters (set --min-cluster-size)")
        if options.min_cluster_size > n:
            raise SvclusterError(f"--min-cluster-size {options.min_cluster_size} is more than the {n} locations with embeddings")
    for k in [] if options.finds_k else options.k_values():
        if not 2 <= k <= MAX_K:
            raise SvclusterError(f"k must be between 2 and {MAX_K}, not {k}")
        if k >= n:
            raise SvclusterError(f"k={k} needs more than {k} locations with embeddings; the map has {n}")
    if options.pca_dims is not None and not 1 <= options.pca_dims <= min(n, dim):
        raise SvclusterError(f"--pca must be between 1 and {min(n, dim)} (locations and vector size), not {options.pca_dims}")
    if options.silhouette_sample < 0 or options.n_init < 1 or options.max_iter < 1 or options.batch_size < 1:
        raise SvclusterError("silhouette_sample must be >= 0 and n_init, max_iter, batch_size >= 1")


# ---- identity --------------------------------------------------------------------------------
def run_parameters(chosen: EmbeddingSet, options: ClusterOptions, k: int | None, map_sha256: str | None = None) -> dict:
    """Every parameter a run depends on (``k`` None: those a sweep shares). The map version
    (its file's checksum) is one: a map re-ingested with other content gets runs of its own,
    and the runs of its earlier version are known as such (``stale``). HDBSCAN finds k, so its
    runs have no ``k`` parameter and its own parameters instead of K-means'."""
    params = {
        "format": RUN_FORMAT,
        "map": chosen.map,
        "map_sha256": map_sha256,
        "model": chosen.model,
        "pooling": chosen.pooling,
        "precision": chosen.precision,
        "fingerprint": chosen.fingerprint,
        "algorithm": options.algorithm,
        "init": "k-means++",
        "pca_dims": options.pca_dims,
        "seed": options.seed,
        "n_init": options.n_init,
        "max_iter": options.max_iter,
        "silhouette_sample": options.silhouette_sample,
    }
    if options.finds_k:
        for name in ("init", "n_init", "max_iter"):
            del params[name]
        params.update(min_cluster_size=options.min_cluster_size, min_samples=None, metric="euclidean", cluster_selection_method="eom")
        return params
    if options.algorithm == "minibatch":
        params["batch_size"] = options.batch_size
    if k is not None:
        params["k"] = k
    return params


def parameters_id(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def code_version() -> str:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return f"svcluster {version('svcluster')}; scikit-learn {version('scikit-learn')}; numpy {version('numpy')}"


# ---- fitting -------------------------------------------------------------------------------
def reduce_dims(matrix: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, float | None]:
    """PCA to ``dims`` components (seeded); the reduced float32 matrix and the variance kept
    (None when the vectors do not vary at all: there is no variance to keep a share of)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dims, random_state=seed)
    with pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore", RuntimeWarning)  # 0/0 variance ratio of constant vectors
        reduced = pca.fit_transform(matrix).astype(np.float32, copy=False)
        kept = float(pca.explained_variance_ratio_.sum())
    return reduced, kept if np.isfinite(kept) else None


def distinct_rows(x: np.ndarray) -> int:
    """How many different vectors ``x`` holds (only asked when a fit found fewer clusters than k)."""
    return int(len(np.unique(np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))))))


def degenerate_warnings(x: np.ndarray, fit: "Fit", caught: list[str]) -> list[str]:
    """Plain-language warnings for a fit on degenerate input, instead of scikit-learn's.

    Fewer non-empty clusters than k happens when the map has fewer distinct vectors than k
    (identical vectors: places embedded from the same or blank images, copies of one place).
    Any other warning scikit-learn raised is kept as its message."""
    found = int(np.count_nonzero(np.bincount(fit.labels, minlength=fit.k)))
    out: list[str] = []
    if found < fit.k:
        distinct = distinct_rows(x)
        if distinct <= 1:
            out.append(
                f"all {len(x)} vectors are identical: K-means put every place in one cluster of k={fit.k} "
                "(were the places embedded from the same or from blank images?)"
            )
        else:
            out.append(
                f"only {found} of k={fit.k} clusters hold a place: the map has {distinct} distinct vectors "
                f"among {len(x)} places; the other {fit.k - found} clusters are empty (use a smaller --k)"
            )
    out += [m for m in caught if "distinct clusters" not in m]
    return out


def fit_kmeans(x: np.ndarray, k: int, options: ClusterOptions) -> Fit:
    """K-means (k-means++ init, fixed seed) or MiniBatchKMeans on the rows of ``x``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if options.algorithm == "minibatch":
        model = MiniBatchKMeans(
            n_clusters=k,
            init="k-means++",
            n_init=options.n_init,
            max_iter=options.max_iter,
            batch_size=options.batch_size,
            random_state=options.seed,
        )
    else:
        model = KMeans(n_clusters=k, init="k-means++", n_init=options.n_init, max_iter=options.max_iter, random_state=options.seed)
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        model.fit(x)
    labels = model.labels_.astype(np.int32)
    distances = own_centroid_distances(x, model.cluster_centers_.astype(np.float32), labels)
    fit = Fit(k=k, labels=labels, distances=distances, inertia=float(model.inertia_), n_iter=int(model.n_iter_))
    fit.warnings = degenerate_warnings(x, fit, list(dict.fromkeys(str(w.message) for w in caught)))
    return fit


def own_centroid_distances(x: np.ndarray, centers: np.ndarray, labels: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Euclidean distance of every row to its own cluster's centre (float32).

    ``|x|^2 - 2 x.c + |c|^2`` with one matrix product per chunk: no n x d temporary."""
    out = np.empty(len(x), dtype=np.float32)
    c2 = np.einsum("ij,ij->i", centers, centers)
    for s in range(0, len(x), chunk):
        block, own = x[s : s + chunk], labels[s : s + chunk]
        dots = (block @ centers.T)[np.arange(len(block)), own]
        d2 = np.einsum("ij,ij->i", block, block) - 2.0 * dots + c2[own]
        out[s : s + chunk] = np.sqrt(np.maximum(d2, 0.0))
    return out


def fit_hdbscan(x: np.ndarray, options: ClusterOptions) -> Fit:
    """HDBSCAN (scikit-learn; deterministic: no random step) on the rows of ``x``.

    k is the number of clusters found; places left unclustered get cluster -1 (noise). A
    clustered place's distance is to its cluster's centroid (the mean of its members), a noise
    place's to the nearest centroid; inertia sums the squared distances of the clustered places."""
    from sklearn.cluster import HDBSCAN

    model = HDBSCAN(min_cluster_size=options.min_cluster_size, metric="euclidean", cluster_selection_method="eom", copy=True)
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        labels = model.fit_predict(x).astype(np.int32)
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    members = labels >= 0
    if k:
        sums = np.zeros((k, x.shape[1]), np.float64)
        np.add.at(sums, labels[members], x[members])
        centers = (sums / np.bincount(labels[members], minlength=k)[:, None]).astype(np.float32)
        distances = own_centroid_distances(x, centers, np.maximum(labels, 0))
        if not members.all():
            noise = np.flatnonzero(~members)
            d2 = np.einsum("ij,ij->i", x[noise], x[noise])[:, None] - 2.0 * (x[noise] @ centers.T) + np.einsum("ij,ij->i", centers, centers)[None, :]
            distances[noise] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    else:
        distances = np.linalg.norm(x - x.mean(axis=0), axis=1).astype(np.float32)
    fit = Fit(k=k, labels=labels, distances=distances, inertia=float(np.square(distances[members], dtype=np.float64).sum()), n_iter=0)
    if k == 0:
        fit.warnings.append(f"HDBSCAN found no cluster: all {len(x)} places are noise (try a smaller --min-cluster-size)")
    fit.warnings += list(dict.fromkeys(str(w.message) for w in caught))
    return fit


def sampled_silhouette(x: np.ndarray, labels: np.ndarray, sample: int, seed: int, chunk: int = 2048) -> float | None:
    """The mean silhouette coefficient over a seeded sample of rows (all rows when fewer).

    Same definition and same sample as ``sklearn.metrics.silhouette_score(x, labels,
    sample_size=sample, random_state=seed)``, computed with float32 matrix products in chunks so
    that it stays a small share of the clustering's time. None when undefined (one cluster in
    the sample, or as many clusters as points) or when ``sample`` is 0.
    """
    n = len(x)
    if sample == 0:
        return None
    if n > sample:
        idx = np.random.RandomState(seed).permutation(n)[:sample]
        xs, ls = x[idx], labels[idx]
    else:
        xs, ls = x, labels
    uniq, ls = np.unique(ls, return_inverse=True)
    m, c = len(xs), len(uniq)
    if not 2 <= c <= m - 1:
        return None
    xs = np.ascontiguousarray(xs, dtype=np.float32)
    onehot = np.zeros((m, c), dtype=np.float32)
    onehot[np.arange(m), ls] = 1.0
    counts = onehot.sum(axis=0)
    sq = np.einsum("ij,ij->i", xs, xs)
    scores = np.empty(m, dtype=np.float64)
    for s in range(0, m, chunk):
        block = xs[s : s + chunk]
        d2 = sq[s : s + chunk, None] + sq[None, :] - 2.0 * (block @ xs.T)
        np.maximum(d2, 0.0, out=d2)
        d = np.sqrt(d2, out=d2)
        rows = np.arange(s, min(s + chunk, m))
        d[rows - s, rows] = 0.0
        sums = (d @ onehot).astype(np.float64)
        own = ls[rows]
        own_count = counts[own]
        a = sums[rows - s, own] / np.maximum(own_count - 1, 1)
        means = sums / counts[None, :]
        means[rows - s, own] = np.inf
        b = means.min(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            sil = (b - a) / np.maximum(a, b)
        sil[own_count <= 1] = 0.0
        scores[rows] = np.nan_to_num(sil)
    return float(scores.mean())


# ---- stable numbering ----------------------------------------------------------------------
def size_order(labels: np.ndarray, k: int) -> np.ndarray:
    """A renumbering (old -> new) that makes cluster 0 the largest; ties keep the fit's order."""
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], c))
    mapping = np.empty(k, dtype=np.int32)
    mapping[order] = np.arange(k, dtype=np.int32)
    return mapping


def match_numbers(new: np.ndarray, old: np.ndarray, k_new: int) -> np.ndarray:
    """A renumbering (fit label -> number) of ``new`` that best agrees with ``old``.

    ``new`` and ``old`` are the labels of the same locations in the new fit and the previous run.
    Clusters are matched one to one by maximum overlap (Hungarian algorithm on the contingency
    table); a new cluster matched to old number j keeps j when j < k_new. The others (no match
    because k grew, or a match to a number that does not fit because k shrank) take the free
    numbers in increasing order: matched ones by their old number, then unmatched ones by size.
    """
    from scipy.optimize import linear_sum_assignment  # on first use: keeps the CLI's start-up short

    k_old = int(old.max()) + 1 if len(old) else 0
    table = np.bincount(new.astype(np.int64) * max(k_old, 1) + old, minlength=k_new * max(k_old, 1))
    table = table.reshape(k_new, max(k_old, 1))
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(k_new, -1, dtype=np.int32)
    leftover: list[tuple[int, int, int]] = []  # (group, key, cluster): matched-too-high, then unmatched
    for r, c in zip(rows, cols):
        if c < k_new and table[r, c] > 0:
            mapping[r] = c
        else:
            leftover.append((0, int(c), int(r)) if table[r, c] > 0 else (1, 0, int(r)))
    sizes = table.sum(axis=1)
    matched = {int(r) for r in rows}
    for r in range(k_new):
        if r not in matched:
            leftover.append((1, 0, r))
    leftover.sort(key=lambda t: (t[0], t[1], -sizes[t[2]], t[2]))
    free = [n for n in range(k_new) if n not in set(mapping.tolist())]
    for (_, _, r), number in zip(leftover, free):
        mapping[r] = number
    return mapping


def renumber(fit: Fit, mapping: np.ndarray) -> None:
    """Apply ``mapping`` (fit label -> number); noise (-1) stays -1 and is not in ``sizes``."""
    members = fit.labels >= 0
    fit.labels = np.where(members, mapping[np.where(members, fit.labels, 0)] if len(mapping) else 0, NOISE).astype(np.int32)
    fit.sizes = np.bincount(fit.labels[members], minlength=fit.k).tolist()


def sql_rows(con: Connection, name: str, params: dict) -> list[dict]:
    """The rows of ``sql/<name>.sql`` run on ``con`` with ``params``."""
    return con.sql(load_sql(name), params=params).to_arrow_table().to_pylist()


def align_to_previous(con: Connection, map_name: str, location_ids: np.ndarray, fit: Fit) -> None:
    """Renumber ``fit`` to follow the run ``sql/cluster/numbered_after.sql`` names: the map's latest
    committed run with the same k, else its latest of any k, a sibling of the same sweep included
    (why that is not the previous version: that file); a map's first run is numbered by size,
    largest first. Noise
    (-1, of this fit or of the previous run) takes no part in the matching and stays -1."""
    prev = sql_rows(con, "cluster/numbered_after", {"map": map_name, "k": fit.k})
    mapping = None
    if prev:
        t = con.sql(load_sql("cluster/run_labels"), params={"run_id": prev[0]["run_id"]}).to_arrow_table()
        old_ids = np.asarray(t.column("location_id").to_pylist(), dtype=object)
        old_labels = t.column("cluster").to_numpy().astype(np.int64)
        _, ours, theirs = np.intersect1d(location_ids, old_ids, assume_unique=True, return_indices=True)
        both = (fit.labels[ours] >= 0) & (old_labels[theirs] >= 0)
        ours, theirs = ours[both], theirs[both]
        if len(ours):
            mapping = match_numbers(fit.labels[ours], old_labels[theirs], fit.k)
            fit.aligned_to, fit.aligned_name = prev[0]["run_id"], prev[0]["name"]
    if mapping is None:
        mapping = size_order(fit.labels, fit.k)
    renumber(fit, mapping)


# ---- writing -------------------------------------------------------------------------------
def write_run(
    lake: Lake,
    run_id: str,
    params: dict,
    sweep_id: str,
    vectors: Vectors,
    fit: Fit,
    options: ClusterOptions,
    explained: float | None,
    request_id: str | None = None,
    duplicates: DuplicatePairs | None = None,
) -> None:
    """The run's row with its assignments and near-duplicate pairs, as one commit."""
    n = len(vectors.location_ids)
    pairs = None
    if duplicates is not None and len(duplicates):
        ids = np.asarray(vectors.location_ids, dtype=object)
        a, b = ids[duplicates.a], ids[duplicates.b]
        first = a < b
        pairs = pa.table(
            {
                "location_a": pa.array(np.where(first, a, b).tolist(), pa.string()),
                "location_b": pa.array(np.where(first, b, a).tolist(), pa.string()),
                "cosine": pa.array(duplicates.cosine, pa.float32()),
            }
        )
    assignments = pa.table(
        {
            "location_id": pa.array(vectors.location_ids, pa.string()),
            "cluster": pa.array(fit.labels, pa.int32()),
            "distance": pa.array(fit.distances, pa.float32()),
        }
    )
    row = {
        "run_id": run_id,
        "map": params["map"],
        "model": params["model"],
        "pooling": params["pooling"],
        "precision": params["precision"],
        "algorithm": options.algorithm,
        "k": fit.k,
        "pca_dims": options.pca_dims,
        "seed": options.seed,
        "params": json.dumps(params, sort_keys=True),
        "fingerprint": params["fingerprint"],
        "n_locations": n,
        "inertia": fit.inertia,
        "silhouette": fit.silhouette,
        "sweep_id": sweep_id,
        "request_id": request_id,
        "aligned_to": fit.aligned_to,
        "pca_explained_variance": explained,
        "sizes": json.dumps(fit.sizes),
        "n_iter": fit.n_iter,
        "nonempty_clusters": fit.nonempty,
        "warnings": json.dumps(fit.warnings) if fit.warnings else None,
        "map_sha256": params.get("map_sha256"),
        "code_version": code_version(),
        "created_at": now_utc(),
    }
    commit_run(lake, row, assignments, pairs)


def existing_run(con: Connection, run_id: str) -> RunSummary | None:
    """The committed run ``run_id`` as a summary (reused=True), or None."""
    rows = sql_rows(con, "cluster/run_row", {"run_id": run_id})
    if not rows:
        return None
    r = rows[0]
    aligned = None
    if r["aligned_to"]:
        prev = sql_rows(con, "cluster/run_row", {"run_id": r["aligned_to"]})
        aligned = prev[0]["name"] if prev else None
    sizes = json.loads(r["sizes"]) if r["sizes"] else []
    noise = max(0, int(r["n_locations"] or 0) - sum(sizes)) if sizes else 0
    return RunSummary(
        r["run_id"], r["name"], r["k"], r["inertia"], r["silhouette"], sizes, True, aligned, parse_warnings(r["warnings"]), noise,
        duplicate_count(con, run_id),
    )


def duplicate_count(con: Connection, run_id: str) -> int:
    """Pairs of near-identical panoramas of a committed run (``duplicate_panoramas``); the view
    is only asked when the run has a pair at all."""
    return int(sql_rows(con, "cluster/run_duplicates", {"run_id": run_id})[0]["duplicates"] or 0)


def parse_warnings(raw: str | None) -> list[str]:
    """A run's recorded warnings (``cluster_runs.warnings``, a JSON list) as a list."""
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return [str(raw)]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def cluster_map(
    lake: Lake, map_name: str, options: ClusterOptions | None = None, progress: Progress | None = None
) -> ClusterResult:
    """Cluster ``map_name``'s embeddings once, or once per k of a sweep; runs already in the lake
    (same embeddings, same parameters) are reused, not refitted."""
    options = options or ClusterOptions()
    progress = progress or NullProgress()
    with lake.connect() as con:
        choice, note = choose_embeddings(con, map_name, options)
        version = map_checksum(con, map_name)
        chosen = embedding_set(con, map_name, choice.model, choice.pooling, choice.precision)
        check_options(options, chosen.count, chosen.dim)
        sweep_id = parameters_id(run_parameters(chosen, options, None, version))
        request_id = uuid.uuid4().hex  # the runs this call writes are one request (siblings of a sweep)
        ks: list[int | None] = [None] if options.finds_k else list(options.k_values())
        planned = [(k, run_parameters(chosen, options, k, version)) for k in ks]
        summaries: dict[int, RunSummary] = {}
        for i, (k, params) in enumerate(planned):
            found = existing_run(con, parameters_id(params))
            if found:
                summaries[i] = found
        todo = [(i, k, p) for i, (k, p) in enumerate(planned) if i not in summaries]
        if todo:
            vectors = load_selected(lake, con, chosen, progress)
            x, explained = vectors.matrix, None
            if options.pca_dims is not None:
                x, explained = reduce_dims(x, options.pca_dims, options.seed)
            first = "" if todo[0][1] is None else f" k={todo[0][1]}"
            progress.start(len(todo), f"fitting {options.algorithm}" + (first if len(todo) == 1 else f" for {len(todo)} values of k"))
            for i, k, params in todo:
                fit = fit_hdbscan(x, options) if k is None else fit_kmeans(x, k, options)
                if options.pca_dims is not None and explained is None:
                    fit.warnings.insert(0, "the vectors do not vary: PCA kept no variance")
                align_to_previous(con, map_name, vectors.location_ids, fit)
                members = fit.labels >= 0  # the silhouette of HDBSCAN's clusters leaves its noise out
                xs, ls = (x, fit.labels) if members.all() else (x[members], fit.labels[members])
                fit.silhouette = sampled_silhouette(xs, ls, options.silhouette_sample, options.seed)
                run_id = parameters_id(params)
                duplicates = None if options.skip_duplicates else near_duplicates(vectors.matrix, fit.labels)
                write_run(lake, run_id, params, sweep_id, vectors, fit, options, explained, request_id, duplicates)
                written = existing_run(con, run_id)
                summaries[i] = RunSummary(
                    run_id,
                    written.name if written else "",
                    fit.k,
                    fit.inertia,
                    fit.silhouette,
                    fit.sizes,
                    False,
                    fit.aligned_name,
                    fit.warnings,
                    fit.noise,
                    written.duplicates if written else 0,
                )
                progress.advance(1)
            progress.finish()
    runs = [summaries[i] for i in range(len(planned))]
    recommended, reason = recommend(runs) if len(runs) > 1 else (None, None)
    return ClusterResult(
        map=map_name,
        model=chosen.model,
        pooling=chosen.pooling,
        precision=chosen.precision,
        n_locations=chosen.count,
        map_locations=choice.map_locations,
        note=note,
        runs=runs,
        sweep_id=sweep_id if len(runs) > 1 else None,
        recommended_k=recommended,
        recommendation=reason,
    )


def recommend(runs: list[RunSummary]) -> tuple[int | None, str | None]:
    """The k of a sweep with the highest silhouette (the smaller k on a tie); a k whose fit
    left clusters empty is only recommended when every k did."""
    scored = [r for r in runs if r.silhouette is not None and r.nonempty == r.k] or [r for r in runs if r.silhouette is not None]
    if not scored:
        return None, "no silhouette could be computed; look at where the inertia stops falling fast"
    best = max(scored, key=lambda r: (r.silhouette, -r.k))
    return best.k, f"k={best.k} has the highest silhouette ({best.silhouette:.3f}) of k={runs[0].k}..{runs[-1].k}"


def runs(lake: Lake, map_name: str | None = None) -> list[RunInfo]:
    """Committed runs (of one map, or all), oldest first per map."""
    rows = lake.query(load_sql("cluster/runs_of_map"), {"map": map_name}).to_pylist()
    return [RunInfo(**{**r, "warnings": parse_warnings(r["warnings"])}) for r in rows]
