"""Near-identical embeddings inside a run's clusters: the same spot covered twice, or a copy.

Two places are near-duplicates when the cosine of their L2-normalised embeddings is at least
``DUPLICATE_COSINE`` (0.995: views that differ by little more than JPEG noise, exposure or a
passing car). Comparing every pair of a map is O(n^2); near-identical vectors are almost always
in the same cluster (they are equally close to every centroid), so only pairs within one cluster
of the run are compared (HDBSCAN's noise counts as one group), in blocks of rows against the rest
of their cluster: memory stays ``block x cluster size`` and the cost is the sum of the squared
cluster sizes, about k times less than all pairs. A pair split by a cluster border is missed.
The cluster step writes the pairs with the run (``cluster_duplicates``); the view
``duplicate_panoramas`` keeps those whose panoramas differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DUPLICATE_COSINE = 0.995
BLOCK_ROWS = 1024


@dataclass(frozen=True)
class DuplicatePairs:
    """Pairs of rows (``a`` < ``b``, indices into the clustered matrix) and their cosine."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    cosine: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.a)


def near_duplicates(vectors: np.ndarray, labels: np.ndarray, threshold: float = DUPLICATE_COSINE, block: int = BLOCK_ROWS) -> DuplicatePairs:
    """Every pair of rows of ``vectors`` with the same label whose cosine is >= ``threshold``."""
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    found_s: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        v = np.asarray(vectors[idx], dtype=np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        for s in range(0, len(idx), block):
            sims = v[s : s + block] @ v[s:].T  # this block against itself and the rows after it
            i, j = np.nonzero(sims >= threshold)
            keep = j > i  # rows of the block are columns 0.. of sims: the upper triangle only
            i, j = i[keep], j[keep]
            found_a.append(idx[s + i])
            found_b.append(idx[s + j])
            found_s.append(sims[i, j].astype(np.float32))
    if not found_a:
        return DuplicatePairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return DuplicatePairs(np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s))
