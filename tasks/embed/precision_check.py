"""The precision quality gate: does a faster precision give the same vectors and clusters?

A sample of the map's views is embedded twice — by the reference (fp32, torch eager: exactly
``get_image_features``) and by the candidate precision and runtime — and judged three ways,
each for a reason (docs/embed.md, "The quality gate"):

- per-view cosine (min, median): the vectors themselves. Pass: median >= 0.995.
- neighbour agreement: the share of each view's 10 nearest neighbours under fp32 that stay
  among its 10 nearest under the candidate, averaged — what search and look-alikes see; it
  needs no clustering, so it cannot be confused with K-means' own instability. Pass: >= 0.90.
- K-means agreement judged against K-means' own noise: the ARI between fp32 and the candidate
  at the same seed (median over seeds), beside the median ARI between fp32 runs at different
  seeds. K-means (one init, as ``svcluster cluster`` runs it) moves between seeds even on the
  same vectors; a precision passes when it moves the labels no more than another seed does.

Both speeds are reported too. Nothing is written to the lake.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from svcluster.sql import load_sql
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.embed.models import Embedder, choose_model, is_baseline, load_embedder
from svcluster.tasks.embed.preprocess import decode_image

if TYPE_CHECKING:  # the step runs auto's measurement (precision_auto), which uses this gate
    from svcluster.tasks.embed.step import EmbedOptions

MEDIAN_COSINE_TARGET = 0.995
NEIGHBOUR_TARGET = 0.90
NEIGHBOURS = 10
SEEDS = 5  # K-means seeds: ARI at the same seed, and between every pair of seeds for the noise
TARGETS = (
    f"median cosine >= {MEDIAN_COSINE_TARGET}, neighbour agreement@{NEIGHBOURS} >= {NEIGHBOUR_TARGET}, "
    "ARI vs fp32 (same seed) >= ARI between fp32 seeds"
)


@dataclass(frozen=True)
class Agreement:
    """How far a candidate's vectors agree with the reference's (see the module docstring)."""

    cosine_min: float
    cosine_median: float
    neighbour_agreement: float
    neighbours: int
    k: int
    ari: float  # fp32 vs candidate at the same seed, median over seeds
    ari_seed_noise: float  # fp32 vs fp32 at different seeds, median over pairs

    @property
    def passed(self) -> bool:
        return (
            self.cosine_median >= MEDIAN_COSINE_TARGET
            and self.neighbour_agreement >= NEIGHBOUR_TARGET
            and self.ari >= self.ari_seed_noise
        )


@dataclass
class PrecisionCheck:
    """Reference fp32 against ``precision`` on ``views`` sampled views of ``map``."""

    map: str
    model: str
    precision: str
    runtime: str
    views: int
    k: int
    cosine_min: float
    cosine_median: float
    neighbour_agreement: float
    neighbours: int
    ari: float
    ari_seed_noise: float
    # Median cosine distance between different views' reference vectors: the signal K-means
    # separates, beside the precision error (1 - cosine_median).
    reference_spread: float
    reference_images_per_second: float
    images_per_second: float
    speedup: float
    passed: bool
    targets: str = TARGETS


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def neighbour_agreement(reference: np.ndarray, candidate: np.ndarray, neighbours: int = NEIGHBOURS) -> float:
    """Mean share of each row's ``neighbours`` nearest rows (cosine, itself excluded) under the
    reference that are also among its nearest under the candidate."""
    n = len(reference)
    m = min(neighbours, n - 1)
    if m < 1:
        return 1.0

    def nearest(v: np.ndarray) -> np.ndarray:
        sims = unit_rows(v) @ unit_rows(v).T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, m - 1, axis=1)[:, :m]

    ref, cand = nearest(reference), nearest(candidate)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(ref, cand)]
    return float(np.mean(shared) / m)


def kmeans_labels(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-means labels with one init, as ``svcluster cluster`` fits by default."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(vectors)


def compare_vectors(reference: np.ndarray, candidate: np.ndarray, k: int = 10, seeds: int = SEEDS) -> Agreement:
    """The gate's figures for two embeddings of the same views (rows in the same order)."""
    from sklearn.metrics import adjusted_rand_score

    ref, cand = unit_rows(reference), unit_rows(candidate)
    cos = (ref * cand).sum(axis=1)
    k = max(1, min(k, len(ref) - 1))
    ref_labels = [kmeans_labels(ref, k, s) for s in range(seeds)]
    same_seed = [adjusted_rand_score(ref_labels[s], kmeans_labels(cand, k, s)) for s in range(seeds)]
    between_seeds = [adjusted_rand_score(a, b) for a, b in combinations(ref_labels, 2)] or [1.0]
    return Agreement(
        cosine_min=round(float(cos.min()), 6),
        cosine_median=round(float(np.median(cos)), 6),
        neighbour_agreement=round(neighbour_agreement(ref, cand), 4),
        neighbours=min(NEIGHBOURS, len(ref) - 1),
        k=k,
        ari=round(float(np.median(same_seed)), 4),
        ari_seed_noise=round(float(np.median(between_seeds)), 4),
    )


def pairwise_spread(vectors: np.ndarray) -> float:
    """Median cosine distance between different rows (0: all identical)."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = v @ v.T
    upper = sims[np.triu_indices(len(v), k=1)]
    return float(np.median(1.0 - upper)) if upper.size else 0.0


def timed_embed(embedder: Embedder, pixels: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Vectors of prepared inputs in batches, and images/s of the model alone."""
    # Warm-up on a whole batch: first-call allocations, and int8-static's calibration when its
    # cache has none (on these views, as many as one batch of the embed step would give it).
    embedder.embed(pixels[:batch_size])
    out, start = [], time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        out.append(embedder.embed(pixels[i : i + batch_size]))
    return np.concatenate(out), len(pixels) / (time.perf_counter() - start)


def sample_pixels(lake: Lake, map_name: str, prepare: Callable[[Image.Image], np.ndarray], sample: int, workers: int) -> np.ndarray:
    """Model inputs of up to ``sample`` 'ok' views of ``map_name`` (a deterministic sample,
    ``sql/embed/sample_views.sql``), stacked; ``(0,)`` when the map has none."""
    rows = lake.query(load_sql("embed/sample_views"), {"map": map_name, "n": sample})
    if rows.num_rows == 0:
        return np.zeros((0,), np.float32)
    paths = rows.column("path").to_pylist()
    what = [f"location {loc} heading {h} ({p})" for loc, h, p in zip(*(rows.column(c).to_pylist() for c in ("location_id", "heading", "path")))]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return np.stack(list(pool.map(lambda i: prepare(decode_image(lake.read_bytes(paths[i]), what[i])), range(len(paths)))))


def check_precision(lake: Lake, map_name: str, options: EmbedOptions, sample: int = 256, k: int = 10) -> PrecisionCheck:
    """Run the quality gate for ``options.precision`` on up to ``sample`` views of ``map_name``."""
    options.validate()
    if is_baseline(options.model):
        raise SvclusterError("--check-precision compares model precisions; the baseline has only fp32")
    choice = choose_model(options.model, options.device, options.precision)
    reference = load_embedder(options.model, "cpu", "fp32", "torch")
    candidate = load_embedder(options.model, options.device, options.precision, options.runtime)
    pixels = sample_pixels(lake, map_name, reference.prepare, sample, options.workers)
    if len(pixels) < 3:
        raise NotFoundError(f"map {map_name!r} has {len(pixels)} fetched views; the check needs at least 3")
    ref_vecs, ref_rate = timed_embed(reference, pixels, options.batch_size)
    cand_vecs, cand_rate = timed_embed(candidate, pixels, options.batch_size)
    agreement = compare_vectors(ref_vecs, cand_vecs, k)
    return PrecisionCheck(
        map=map_name,
        model=choice.model,
        precision=candidate.precision,
        runtime=candidate.runtime,
        views=len(pixels),
        **vars(agreement),
        reference_spread=round(pairwise_spread(ref_vecs), 6),
        reference_images_per_second=round(ref_rate, 2),
        images_per_second=round(cand_rate, 2),
        speedup=round(cand_rate / ref_rate, 2),
        passed=agreement.passed,
    )
