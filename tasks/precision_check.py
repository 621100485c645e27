"""The precision quality gate: does a faster precision give the same vectors and clusters?

A sample of the map's views is embedded twice — by the reference (fp32, torch eager: exactly
``get_image_features``) and by the chosen precision and runtime — and compared:
per-view cosine similarity (min, median) and the adjusted Rand index between K-means (k=10,
seeded) on each set. Targets: median cosine >= 0.995 and ARI >= 0.95. Both speeds are
reported too. Nothing is written to the lake.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sql import load_sql
from tasks.embed import EmbedOptions
from tasks.errors import NotFoundError, SvclusterError
from tasks.lake import Lake
from tasks.models import Embedder, choose_model, is_baseline, load_embedder
from tasks.preprocess import decode_image

MEDIAN_COSINE_TARGET = 0.995
ARI_TARGET = 0.95


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
    ari: float
    # Median cosine distance between different views' reference vectors: the signal K-means
    # separates. When it is not far above the precision error (1 - cosine_median) — as with
    # random weights, where all images look alike — the ARI measures noise, not the precision.
    reference_spread: float
    reference_images_per_second: float
    images_per_second: float
    speedup: float
    passed: bool
    targets: str = f"median cosine >= {MEDIAN_COSINE_TARGET}, ARI >= {ARI_TARGET}"


def compare_vectors(reference: np.ndarray, candidate: np.ndarray, k: int = 10, seed: int = 0) -> tuple[np.ndarray, float]:
    """(per-row cosine similarity, ARI between seeded K-means labelings of the two sets)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cos = (ref * cand).sum(axis=1)
    k = max(1, min(k, len(ref) - 1))
    labels_ref = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(ref)
    labels_cand = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(cand)
    return cos, float(adjusted_rand_score(labels_ref, labels_cand))


def pairwise_spread(vectors: np.ndarray) -> float:
    """Median cosine distance between different rows (0: all identical)."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = v @ v.T
    upper = sims[np.triu_indices(len(v), k=1)]
    return float(np.median(1.0 - upper)) if upper.size else 0.0


def timed_embed(embedder: Embedder, pixels: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """Vectors of prepared inputs in batches, and images/s of the model alone."""
    embedder.embed(pixels[: min(2, len(pixels))])  # warm-up (first-call allocations)
    out, start = [], time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        out.append(embedder.embed(pixels[i : i + batch_size]))
    return np.concatenate(out), len(pixels) / (time.perf_counter() - start)


def check_precision(lake: Lake, map_name: str, options: EmbedOptions, sample: int = 256, k: int = 10) -> PrecisionCheck:
    """Run the quality gate for ``options.precision`` on up to ``sample`` views of ``map_name``."""
    options.validate()
    if is_baseline(options.model):
        raise SvclusterError("--check-precision compares model precisions; the baseline has only fp32")
    choice = choose_model(options.model, options.device, options.precision)
    rows = lake.query(load_sql("embed_sample_views"), {"map": map_name, "n": sample})
    if rows.num_rows < 3:
        raise NotFoundError(f"map {map_name!r} has {rows.num_rows} fetched views; the check needs at least 3")
    reference = load_embedder(options.model, "cpu", "fp32", "torch")
    candidate = load_embedder(options.model, options.device, options.precision)
    paths = rows.column("path").to_pylist()
    what = [f"location {loc} heading {h} ({p})" for loc, h, p in zip(*(rows.column(c).to_pylist() for c in ("location_id", "heading", "path")))]
    with ThreadPoolExecutor(max_workers=options.workers) as pool:
        pixels = np.stack(list(pool.map(lambda i: reference.prepare(decode_image(lake.read_bytes(paths[i]), what[i])), range(len(paths)))))
    ref_vecs, ref_rate = timed_embed(reference, pixels, options.batch_size)
    cand_vecs, cand_rate = timed_embed(candidate, pixels, options.batch_size)
    cos, ari = compare_vectors(ref_vecs, cand_vecs, k)
    k_used = max(1, min(k, len(pixels) - 1))
    median = float(np.median(cos))
    return PrecisionCheck(
        map=map_name,
        model=choice.model,
        precision=candidate.precision,
        runtime=candidate.runtime,
        views=len(pixels),
        k=k_used,
        cosine_min=round(float(cos.min()), 6),
        cosine_median=round(median, 6),
        ari=round(ari, 4),
        reference_spread=round(pairwise_spread(ref_vecs), 6),
        reference_images_per_second=round(ref_rate, 2),
        images_per_second=round(cand_rate, 2),
        speedup=round(cand_rate / ref_rate, 2),
        passed=median >= MEDIAN_COSINE_TARGET and ari >= ARI_TARGET,
    )
