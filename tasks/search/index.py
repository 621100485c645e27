"""The approximate index of one vector set: an inverted file (IVF) over unit vectors, in numpy.

What it is: ``nlist`` centroids found by spherical k-means (seeded) on a sample of the set's
rows; every row belongs to the list of its nearest centroid. A query scores the centroids, takes
the ``nprobe`` nearest lists and ranks exactly (cosine against the full float32 vectors) the rows
those lists hold. Nothing is quantised, so a row that is found has its exact score; a true
neighbour is missed only when it sits in a list that was not probed. On clustered data
(embeddings of street scenes are: a map is a few landscapes, many times over)
``benchmarks/search.py`` measures its recall@10 against brute force at 1,000,000 x 768.

Stored in the lake under ``cache/search_index/<key>.npz`` (centroids, the rows grouped by list,
the list offsets: about 10 MB for a million rows; the vectors themselves stay in the vector cache
of ``svcluster.tasks.cluster.vectors``). The key hashes the vector set's fingerprint (which
names the exact embedding rows), the matrix shape and the index parameters: new or re-embedded
places give a new fingerprint, hence a new key and a rebuilt index, so a stored index is never
stale and deleting ``cache/`` only costs one rebuild.

Why numpy and not faiss, hnswlib or usearch: the issue suggests a maintained library, and those
are the usual choices; but an IVF with exact re-ranking meets the issue's targets at a million
x 768 on clustered vectors (``benchmarks/search.py``; docs/search.md has the figures) in a
couple of hundred lines of numpy, with

- no new dependency and no native wheel per platform (faiss-cpu and torch each ship their own
  OpenMP runtime, a known source of aborts when both load in one process, as on macOS; the embed
  step and ``similar --image`` load torch);
- plain arrays stored in the lake like every other cache (a faiss or HNSW index file is one more
  binary format, tied to the library's version);
- exact scores: the probed rows are ranked against the full float32 vectors, so a score means
  what the exact path's means (a quantised faiss index, IVF-PQ, would need this re-rank anyway);
- a build of about a minute at a million x 768 on 2 busy cores (an HNSW graph, hnswlib or
  usearch, answers faster per query, but inserts every row into a graph with many distance
  evaluations each and keeps its own copy of the vectors; not measured here, and a map's vector
  set is searched a handful of times per build).

Should a lake outgrow it (tens of millions of places, or many queries per second), this module
is the one place to swap the structure behind ``index_for`` and ``SearchIndex.search``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.store import Lake

log = logging.getLogger("svcluster.search")

INDEX_VERSION = 1
# Up to this many rows the search is exact (one matrix-vector product), and building an index
# would pay only after many searches (docs/search.md, 'Speed: exact, or the approximate index').
# Above it the index is built once per vector set, stored and reused.
EXACT_MAX_ROWS = 100_000
TRAIN_ROWS_PER_LIST = 64  # k-means is fitted on at most nlist * 64 sampled rows
TRAIN_ITERATIONS = 10
BLOCK_ROWS = 32_768  # rows assigned to lists per matrix product (bounds the temporary memory)
_MEMO: dict[str, "SearchIndex"] = {}  # the last index used in this process, ready to search


@dataclass(frozen=True)
class IndexParams:
    """How an index is built and probed; part of its key."""

    nlist: int
    nprobe: int
    seed: int = 0

    @classmethod
    def for_rows(cls, n: int, seed: int = 0) -> "IndexParams":
        """About sqrt(n) lists (1,000 lists of ~1,000 rows at a million) and 1/32 of them probed
        (at least 8): the setting ``benchmarks/search.py`` measures."""
        nlist = max(1, min(n, int(round(math.sqrt(n)))))
        return cls(nlist=nlist, nprobe=min(nlist, max(8, nlist // 32)), seed=seed)


@dataclass
class SearchIndex:
    """An IVF index of a matrix: ``order[offsets[i]:offsets[i+1]]`` are the matrix rows of list
    ``i`` (ascending), whose centroid is ``centroids[i]`` (unit rows). Searching reads the probed
    rows from ``matrix`` (a gather: no copy of the matrix, what a one-shot CLI search wants);
    after ``group()``, from ``grouped``, the matrix with its rows in list order (one copy as large
    as the matrix, in memory only; each probed list is then one contiguous block, several times
    faster per query at a million rows). ``index_for`` groups an index the second time a process
    uses it: a one-shot CLI search never pays for the copy (seconds at a million rows), a
    process that searches again pays it once."""

    key: str
    params: IndexParams
    centroids: np.ndarray  # float32, nlist x d
    order: np.ndarray  # int64, n
    offsets: np.ndarray  # int64, nlist + 1
    build_seconds: float = 0.0
    matrix: np.ndarray | None = field(default=None, repr=False)
    grouped: np.ndarray | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.order.shape[0])

    def attach(self, matrix: np.ndarray) -> "SearchIndex":
        """Make the index searchable over ``matrix`` (the rows it was built on)."""
        if matrix.shape[0] != self.rows or matrix.shape[1] != self.centroids.shape[1]:
            raise LakeError(f"the search index {self.key[:12]} does not fit a {matrix.shape[0]} x {matrix.shape[1]} matrix")
        self.matrix = matrix
        return self

    def group(self) -> "SearchIndex":
        """Keep the rows in list order too (see the class docstring)."""
        if self.grouped is None and self.matrix is not None:
            self.grouped = np.ascontiguousarray(self.matrix[self.order])
        return self

    def search(self, query: np.ndarray, top: int, exclude: np.ndarray | None = None, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(matrix rows, cosine scores) of the ``top`` rows nearest the unit vector ``query``
        among the rows of the ``nprobe`` nearest lists, best first (ties by row); rows where
        ``exclude`` is true are left out. Probes more lists while fewer than ``top`` rows are
        found."""
        if self.matrix is None:
            raise LakeError("the search index is not attached to its matrix")
        nlist = self.centroids.shape[0]
        probe = min(nlist, nprobe or self.params.nprobe)
        near = np.argsort(-(self.centroids @ query), kind="stable")
        while True:
            lists = near[:probe]
            spans = [(int(self.offsets[i]), int(self.offsets[i + 1])) for i in lists]
            spans = [(lo, hi) for lo, hi in spans if hi > lo]
            rows = np.concatenate([self.order[lo:hi] for lo, hi in spans]) if spans else np.zeros(0, np.int64)
            # numpy's own loop (einsum), not BLAS: a threaded gemv per small block costs more in
            # thread wake-ups than the product itself
            if self.grouped is not None:
                parts = [np.einsum("ij,j->i", self.grouped[lo:hi], query) for lo, hi in spans]
                scores = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            else:
                rows = np.sort(rows)  # read the matrix front to back
                scores = np.einsum("ij,j->i", self.matrix[rows], query)
            if exclude is not None and len(rows):
                keep = ~exclude[rows]
                rows, scores = rows[keep], scores[keep]
            if len(rows) >= top or probe >= nlist:
                break
            probe = min(nlist, probe * 2)
        k = min(top, len(rows))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = part[np.lexsort((rows[part], -scores[part]))]
        return rows[best], scores[best]

    def nbytes(self) -> int:
        """Bytes the stored index takes (centroids, order, offsets)."""
        return int(self.centroids.nbytes + self.order.nbytes + self.offsets.nbytes)


def index_key(fingerprint: str, shape: tuple[int, int], params: IndexParams) -> str:
    """The name of the index of one vector set: the vectors' fingerprint, shape and parameters."""
    text = "\x1e".join(str(v) for v in (INDEX_VERSION, fingerprint, *shape, params.nlist, params.nprobe, params.seed))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def index_path(key: str) -> str:
    return f"cache/search_index/{key}.npz"


def nearest_centroids(matrix: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The list of every row: its nearest centroid by cosine, block by block."""
    labels = np.empty(matrix.shape[0], dtype=np.int64)
    for s in range(0, matrix.shape[0], BLOCK_ROWS):
        labels[s : s + BLOCK_ROWS] = np.argmax(matrix[s : s + BLOCK_ROWS] @ centroids.T, axis=1)
    return labels


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1)).astype(np.float32, copy=False)


def build_index(matrix: np.ndarray, key: str, params: IndexParams) -> SearchIndex:
    """Fit the lists (spherical k-means on a seeded sample) and put every row in one."""
    started = time.perf_counter()
    n, _ = matrix.shape
    rng = np.random.default_rng(params.seed)
    nlist = min(params.nlist, n)
    sample = matrix[np.sort(rng.choice(n, size=min(n, nlist * TRAIN_ROWS_PER_LIST), replace=False))]
    centroids = sample[rng.choice(len(sample), size=nlist, replace=False)].copy()
    for _ in range(TRAIN_ITERATIONS):
        labels = nearest_centroids(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, sample)
        counts = np.bincount(labels, minlength=nlist)
        empty = np.flatnonzero(counts == 0)
        if len(empty):  # an empty list restarts at a random sampled row
            sums[empty] = sample[rng.choice(len(sample), size=len(empty), replace=False)]
        centroids = _unit(sums)
    labels = nearest_centroids(matrix, centroids)
    order = np.argsort(labels, kind="stable").astype(np.int64)
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(labels, minlength=nlist), out=offsets[1:])
    index = SearchIndex(key, IndexParams(nlist, min(params.nprobe, nlist), params.seed), centroids, order, offsets)
    index.build_seconds = time.perf_counter() - started
    return index


def save_index(lake: Lake, index: SearchIndex) -> str:
    buf = io.BytesIO()
    np.savez(
        buf,
        centroids=index.centroids,
        order=index.order,
        offsets=index.offsets,
        params=np.array([index.params.nlist, index.params.nprobe, index.params.seed], np.int64),
        build_seconds=np.array([index.build_seconds]),
    )
    return lake.write_bytes(index_path(index.key), buf.getbuffer())


def read_index(lake: Lake, key: str) -> SearchIndex | None:
    """The stored index named ``key``, or None when there is none (or it cannot be read)."""
    path = index_path(key)
    try:
        if not lake.exists(path):
            return None
        with np.load(io.BytesIO(lake.read_bytes(path))) as z:
            nlist, nprobe, seed = (int(v) for v in z["params"])
            index = SearchIndex(key, IndexParams(nlist, nprobe, seed), z["centroids"], z["order"], z["offsets"], float(z["build_seconds"][0]))
        if len(index.offsets) != nlist + 1 or index.offsets[-1] != len(index.order) or len(index.centroids) != nlist:
            raise ValueError("its lists do not add up")
        return index
    except (LakeError, OSError, ValueError, KeyError) as exc:
        log.warning("the stored search index %s cannot be read (%s): building it again", path, exc)
        return None


@dataclass(frozen=True)
class IndexUse:
    """How a search found its rows: ``method`` exact | ivf, and for ivf whether the index was
    built by this search, read from the lake or already in memory."""

    method: str
    index: str | None = None  # the key
    source: str | None = None  # built | lake | memory
    lists: int | None = None
    probed: int | None = None
    build_seconds: float | None = None


def index_for(lake: Lake, fingerprint: str, matrix: np.ndarray, params: IndexParams | None = None) -> tuple[SearchIndex, str]:
    """The index of this vector set, attached to ``matrix``: from this process's memory, from the
    lake, or built now and stored (a lake that cannot be written still gets its search, with a
    warning). Returns (index, where it came from: memory | lake | built)."""
    params = params or IndexParams.for_rows(matrix.shape[0])
    key = index_key(fingerprint, matrix.shape, params)
    if key in _MEMO:  # searched again in this process: worth grouping the rows (once)
        return _MEMO[key].attach(matrix).group(), "memory"
    index = read_index(lake, key)
    source = "lake"
    if index is not None and index.rows != matrix.shape[0]:
        log.warning("the stored search index %s does not fit its vectors: building it again", index_path(key))
        index = None
    if index is None:
        index = build_index(matrix, key, params)
        source = "built"
        try:
            save_index(lake, index)
        except LakeError as exc:
            log.warning("could not store the search index in the lake (%s)", exc)
    index.attach(matrix)
    _MEMO.clear()  # one index at a time (it holds its matrix, and maybe a grouped copy)
    _MEMO[key] = index
    return index, source


def forget_indexes() -> None:
    """Drop the index kept in memory (tests; a long-lived process that is done searching)."""
    _MEMO.clear()
