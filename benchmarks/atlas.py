"""Which projection the report's atlas uses: speed and quality of the candidates on synthetic
clustered embeddings (the figures in docs/report.md, "Atlas").

Data: ``--n`` unit vectors of ``--dim`` floats around ``--clusters`` random centres (a few of
them close pairs, as real maps have near-duplicate categories), noise as in the report tests.
Quality, on a seeded sample of 2,000 places:
- kNN kept: the share of each place's 10 nearest neighbours (cosine, full dimension) that are
  among its 10 nearest in 2-D (what the atlas is read for: what looks alike sits together);
- label kNN: the share of its 10 nearest in 2-D in the same planted cluster.

    python benchmarks/atlas.py [--n 20000] [--dim 768] [--clusters 12] [--methods pca,tsne,report]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcluster.tasks.report.atlas import _pca, _scaled, project_vectors


def clustered_vectors(n: int, dim: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    centres[1::4] = centres[0::4][: len(centres[1::4])] + 0.6 * rng.normal(size=(len(centres[1::4]), dim))  # near pairs
    labels = rng.integers(0, k, n)
    c = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    v = c + 0.9 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), labels


def knn(query: np.ndarray, data: np.ndarray, rows: np.ndarray, k: int, cosine: bool) -> np.ndarray:
    if cosine:
        d = -(query @ data.T)
    else:
        d = (query ** 2).sum(1)[:, None] - 2 * query @ data.T + (data ** 2).sum(1)[None, :]
    d[np.arange(len(rows)), rows] = np.inf  # not itself
    return np.argpartition(d, k, axis=1)[:, :k]


def quality(v: np.ndarray, labels: np.ndarray, xy: np.ndarray, sample: int = 2000, k: int = 10) -> tuple[float, float]:
    rows = np.random.default_rng(1).choice(len(v), min(sample, len(v)), replace=False)
    high = knn(v[rows], v, rows, k, True)
    low = knn(xy[rows].astype(np.float64), xy.astype(np.float64), rows, k, False)
    kept = np.mean([len(set(a) & set(b)) / k for a, b in zip(high, low)])
    same = float((labels[low] == labels[rows][:, None]).mean())
    return float(kept), same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=12)
    ap.add_argument("--methods", default="pca,tsne,report", help="tsne: every place fitted (slow)")
    args = ap.parse_args()
    v, labels = clustered_vectors(args.n, args.dim, args.clusters)
    print(f"{args.n:,} x {args.dim} vectors, {args.clusters} planted clusters")
    for method in args.methods.split(","):
        t, c = time.perf_counter(), time.process_time()
        if method == "pca":
            xy = _scaled(_pca(v, 2, 42))
        elif method == "tsne":
            xy = project_vectors(v, 42, fit_limit=max(args.n, 1))
        elif method == "report":  # the report's settings: fitted on 5,000, the rest placed by neighbours
            xy = project_vectors(v, 42)
        else:
            raise SystemExit(f"unknown method {method}")
        s, cpu = time.perf_counter() - t, time.process_time() - c
        kept, same = quality(v, labels, xy)
        print(f"{method:8s} {s:7.1f} s wall {cpu:7.1f} s CPU   kNN kept {kept:.3f}   label kNN {same:.3f}")


if __name__ == "__main__":
    main()
