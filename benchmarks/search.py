"""Benchmark: search through the approximate index against exact brute force on the same vectors.

Vectors: N x 768 float32 unit rows (default N = 1,000,000), synthetic and *clustered* as place
embeddings are: 40 "landscapes", each with 50 sub-scenes of varying size (2,000 in all), every
vector a sub-scene centre plus isotropic noise, plus a direction every vector shares (CLIP
embeddings are anisotropic), normalised. Queries are fresh draws from the same mixture (not rows
of the set). Uniform random vectors would have no neighbours worth the name; real StreetCLIP
embeddings of a map were not available at this size here.

Printed, in one process:

1. index build (``svcluster.tasks.search.index``: k-means lists) time, its size as stored in a
   fresh lake, and reading it back from the lake;
2. query latency (median, p95) of our search (``svcluster.tasks.search.step.find_rows``, the
   function ``search`` and ``similar`` call, on a vector set above ``EXACT_MAX_ROWS``) once the
   process has grouped the rows by list (from its second search on), and for the first search of
   a process (a CLI call: probed rows gathered from the matrix); and of a plain numpy exact
   search (``X @ q``, ``argpartition``) on the same matrix, with the ratio;
3. recall@10 of our search against the exact top 10 (targets: median < 50 ms, recall >= 0.95);
4. the exact path of our search (``rank``, what a map below the threshold gets) for scale.

Usage: python benchmarks/search.py [--n 1000000] [--queries 200] [--exact-queries 20] [--noise 1.0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.search import index as search_index
from svcluster.tasks.search.step import VectorSet, find_rows, rank

DIM = 768
LANDSCAPES = 40
SCENES = 50  # per landscape
BLOCK = 65_536
TOP = 10


def mixture(seed: int, noise: float):
    """The mixture's parameters: scene centres (unit), scene weights, the shared direction."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(DIM).astype(np.float32)
    shared /= np.linalg.norm(shared)
    land = rng.standard_normal((LANDSCAPES, DIM)).astype(np.float32)
    land /= np.linalg.norm(land, axis=1, keepdims=True)
    scene = np.repeat(land, SCENES, axis=0) + 0.8 * rng.standard_normal((LANDSCAPES * SCENES, DIM)).astype(np.float32) / np.sqrt(DIM)
    scene /= np.linalg.norm(scene, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(LANDSCAPES * SCENES, 0.7))
    return scene, weights, shared, noise


def draw(params, n: int, rng: np.random.Generator, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` unit vectors of the mixture (written into ``out`` block by block when given)."""
    scene, weights, shared, noise = params
    x = np.empty((n, DIM), np.float32) if out is None else out
    for s in range(0, n, BLOCK):
        m = min(BLOCK, n - s)
        which = rng.choice(len(scene), size=m, p=weights)
        block = rng.standard_normal((m, DIM), dtype=np.float32)
        block *= noise / np.sqrt(DIM)
        block += scene[which]
        block += 0.6 * shared
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s : s + m] = block
    return x


def exact_top(x: np.ndarray, queries: np.ndarray, top: int) -> np.ndarray:
    """The exact top ``top`` rows per query (batched, for recall)."""
    out = np.empty((len(queries), top), np.int64)
    for s in range(0, len(queries), 50):
        scores = x @ queries[s : s + 50].T  # n x 50
        for j in range(scores.shape[1]):
            col = scores[:, j]
            part = np.argpartition(-col, top - 1)[:top]
            out[s + j] = part[np.argsort(-col[part], kind="stable")]
    return out


def numpy_exact(x: np.ndarray, q: np.ndarray, top: int) -> np.ndarray:
    scores = x @ q
    part = np.argpartition(-scores, top - 1)[:top]
    return part[np.argsort(-scores[part])]


def ms(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1000
    return float(np.median(a)), float(np.percentile(a, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--exact-queries", type=int, default=20)
    ap.add_argument("--noise", type=float, default=1.0, help="noise norm relative to the scene centre (1: cosine ~0.7 to it)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    params = mixture(args.seed, args.noise)
    rng = np.random.default_rng(args.seed + 1)
    t = time.perf_counter()
    x = draw(params, args.n, rng)
    queries = draw(params, args.queries, rng)
    print(f"vectors: {args.n:,} x {DIM} float32 ({x.nbytes / 2**30:.2f} GiB), clustered (noise {args.noise}), {args.queries} queries; made in {time.perf_counter() - t:.1f} s")
    if args.n <= search_index.EXACT_MAX_ROWS:
        print(f"note: {args.n:,} rows <= EXACT_MAX_ROWS ({search_index.EXACT_MAX_ROWS:,}): search would be exact; forcing the index for this benchmark")
        search_index.EXACT_MAX_ROWS = args.n - 1
    vs = VectorSet(["bench"], "bench", "mean", "fp32", np.arange(args.n).astype(str).astype(object), ["bench"] * args.n, x, None, f"bench-{args.seed}-{args.n}-{args.noise}")

    with tempfile.TemporaryDirectory(prefix="svcluster-bench-search-") as tmp:
        lake = open_lake(str(Path(tmp) / "lake"))
        search_index.forget_indexes()
        t = time.perf_counter()
        _, _, use = find_rows(lake, vs, queries[0], TOP)
        first = time.perf_counter() - t
        key = use.index
        stored = Path(lake.path(search_index.index_path(key))).stat().st_size
        print(f"index: {use.lists} lists, {use.probed} probed; built in {use.build_seconds:.1f} s "
              f"(first search, build + store + attach: {first:.1f} s); stored {stored / 2**20:.1f} MiB in the lake")
        search_index.forget_indexes()
        t = time.perf_counter()
        idx, source = search_index.index_for(lake, vs.fingerprint, vs.matrix)
        print(f"index read back from the lake: {time.perf_counter() - t:.2f} s (source: {source})")
        # the first search of a process (a CLI call): probed rows gathered from the matrix
        once = []
        for q in queries[: args.exact_queries]:
            t = time.perf_counter()
            idx.search(q, TOP)
            once.append(time.perf_counter() - t)
        t = time.perf_counter()
        find_rows(lake, vs, queries[0], TOP)  # used again in this process: the rows get grouped
        print(f"second use in the process: rows grouped by list (a copy of the matrix): {time.perf_counter() - t:.2f} s")
        ours, found = [], []
        for q in queries:
            t = time.perf_counter()
            rows, _, use = find_rows(lake, vs, q, TOP)
            ours.append(time.perf_counter() - t)
            found.append(rows)
        assert use.method == "ivf" and use.source == "memory" and idx.grouped is not None
        base = []
        for q in queries[: args.exact_queries]:
            t = time.perf_counter()
            numpy_exact(x, q, TOP)
            base.append(time.perf_counter() - t)
        exact_rank = []
        for q in queries[: max(3, args.exact_queries // 4)]:
            t = time.perf_counter()
            rank(x, q, TOP)
            exact_rank.append(time.perf_counter() - t)

        truth = exact_top(x, queries, TOP)
        recall = float(np.mean([len(set(f.tolist()) & set(tr.tolist())) / TOP for f, tr in zip(found, truth)]))
        (om, op), (gm, gp), (bm, bp), (rm, rp) = ms(ours), ms(once), ms(base), ms(exact_rank)
        print(f"our search (index):   median {om:7.2f} ms   p95 {op:7.2f} ms   ({len(ours)} queries)   target: median < 50 ms")
        print(f"  first search of a process (rows gathered): median {gm:7.2f} ms   p95 {gp:7.2f} ms   ({len(once)} queries)")
        print(f"numpy exact baseline: median {bm:7.2f} ms   p95 {bp:7.2f} ms   ({len(base)} queries)")
        print(f"our exact path (rank, below the threshold): median {rm:7.2f} ms")
        print(f"ratio (ours / numpy exact, median): {om / bm:.3f}   speed-up {bm / om:.1f}x")
        print(f"recall@10 against exact: {recall:.4f}   target: >= 0.95")
        search_index.forget_indexes()


if __name__ == "__main__":
    main()
