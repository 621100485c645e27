"""Synthetic lake content for the report tests and benchmark: a generated Chile map, one JPEG
per (landscape band, heading), embeddings that cluster by band, and committed cluster runs —
written through the lake's own API exactly as the fetch/embed/cluster steps write them."""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.cluster.runs import commit_run
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.demo.sample import BANDS, band_of, generate_locations, to_format

HEADINGS = (0, 90, 180, 270)
BAND_COLORS = {"desert": (214, 180, 120), "valley": (120, 170, 90), "forest": (40, 110, 60), "steppe": (170, 160, 110), "ice": (220, 230, 240)}


@dataclass
class SyntheticMap:
    """What was written: the map name, its locations (id, lat, lng, band) and model."""

    name: str
    location_ids: list[str]
    lat: np.ndarray
    lng: np.ndarray
    band: np.ndarray  # index into BANDS
    model: str
    vectors: np.ndarray


def write_map(lake: Lake, folder: Path, n: int, seed: int = 7, name: str = "chile") -> tuple[list[str], np.ndarray, np.ndarray]:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(to_format(generate_locations(n, seed=seed), "customCoordinates", name=name)), encoding="utf-8")
    ingest_map(lake, path, name)
    t = lake.query("SELECT location_id, lat, lng FROM locations WHERE map = $map ORDER BY position", {"map": name})
    return t.column("location_id").to_pylist(), t.column("lat").to_numpy(), t.column("lng").to_numpy()


def scene_jpeg(band: str, heading: int, size: int = 320) -> bytes:
    """A recognisable stand-in for a street view: sky, ground in the band's colour, a road."""
    img = Image.new("RGB", (size, size), (150, 190, 235))
    d = ImageDraw.Draw(img)
    ground = BAND_COLORS[band]
    d.rectangle([0, size // 2, size, size], fill=ground)
    d.polygon([(size * 0.45, size // 2), (size * 0.55, size // 2), (size * 0.8, size), (size * 0.2, size)], fill=(90, 90, 95))
    d.text((8, 8), f"{band} {heading}", fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def write_views(lake: Lake, location_ids: list[str], bands: np.ndarray, only: int | None = None) -> None:
    """Four ok views per location (the first ``only`` locations when given)."""
    blobs = {}
    for b in BANDS:
        for h in HEADINGS:
            blobs[(b.name, h)] = lake.put_blob(scene_jpeg(b.name, h), "jpg")
    ids = location_ids if only is None else location_ids[:only]
    rows: dict[str, list] = {k: [] for k in ("location_id", "heading", "status", "path", "sha256", "pano_id", "capture_date")}
    for i, lid in enumerate(ids):
        band = BANDS[int(bands[i])].name
        for h in HEADINGS:
            path, sha = blobs[(band, h)]
            rows["location_id"].append(lid)
            rows["heading"].append(h)
            rows["status"].append("ok")
            rows["path"].append(path)
            rows["sha256"].append(sha)
            rows["pano_id"].append(f"pano{i}")
            rows["capture_date"].append("2023-01")
    lake.append("images", pa.table(rows))


def write_embeddings(lake: Lake, location_ids: list[str], vectors: np.ndarray, model: str) -> None:
    n, dim = vectors.shape
    flat = pa.array(vectors.astype(np.float32).ravel(), pa.float32())
    lake.append(
        "embeddings",
        pa.table(
            {
                "location_id": location_ids,
                "model": [model] * n,
                "pooling": ["mean"] * n,
                "precision": ["fp32"] * n,
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
                "dim": pa.array([dim] * n, pa.int32()),
                "view_count": pa.array([4] * n, pa.int32()),
            }
        ),
    )


def band_vectors(bands: np.ndarray, dim: int, seed: int = 0, noise: float = 0.35, centers: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.normal(size=(len(BANDS), dim))
    v = centers[bands] / np.linalg.norm(centers[bands], axis=1, keepdims=True) + noise * rng.normal(size=(len(bands), dim)) / np.sqrt(dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def write_run(
    lake: Lake,
    map_name: str,
    location_ids: list[str],
    vectors: np.ndarray,
    labels: np.ndarray,
    model: str,
    *,
    sweep_id: str | None = None,
    created_offset_s: int = 0,
    inertia: float | None = None,
    silhouette: float | None = None,
) -> str:
    """A committed run: its row and assignments (distance = 1 - cosine to the cluster centroid)."""
    run_id = uuid.uuid4().hex
    k = int(labels.max()) + 1
    dist = np.zeros(len(labels), np.float32)
    for c in range(k):
        idx = labels == c
        if idx.any():
            centre = vectors[idx].mean(axis=0)
            centre /= np.linalg.norm(centre)
            dist[idx] = 1 - vectors[idx] @ centre
    assignments = pa.table({"location_id": location_ids, "cluster": pa.array(labels, pa.int32()),
                            "distance": pa.array(dist, pa.float32())})
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=created_offset_s)
    commit_run(
        lake,
        pa.table({
            "run_id": [run_id], "map": [map_name], "model": [model], "pooling": ["mean"], "precision": ["fp32"],
            "algorithm": ["kmeans"], "k": pa.array([k], pa.int32()), "pca_dims": pa.array([None], pa.int32()),
            "seed": pa.array([42], pa.int64()), "params": [json.dumps({"k": k, "seed": 42, "n_init": 4})],
            "fingerprint": ["f" * 16], "n_locations": pa.array([len(labels)], pa.int64()),
            "inertia": pa.array([inertia if inertia is not None else float(dist.sum())], pa.float64()),
            "silhouette": pa.array([silhouette if silhouette is not None else 0.3], pa.float64()),
            "sweep_id": [sweep_id], "code_version": ["test"],
            "created_at": pa.array([created], pa.timestamp("us", tz="UTC")),
        }).to_pylist()[0],
        assignments,
    )
    return run_id


def synthetic_map(lake: Lake, folder: Path, n: int, *, dim: int = 32, model: str = "baseline", views: int | None = None,
                  seed: int = 7, name: str = "chile", centers: np.ndarray | None = None) -> SyntheticMap:
    """A map of ``n`` locations with views and embeddings that cluster by landscape band."""
    ids, lat, lng = write_map(lake, folder, n, seed=seed, name=name)
    names = [b.name for b in BANDS]
    bands = np.asarray([names.index(band_of(float(x)).name) for x in lat], np.int64)
    write_views(lake, ids, bands, only=views)
    vectors = band_vectors(bands, dim, seed=seed, centers=centers)
    write_embeddings(lake, ids, vectors, model)
    return SyntheticMap(name, ids, lat, lng, bands, model, vectors)


def write_sweep(lake: Lake, m: SyntheticMap, ks: tuple[int, ...] = (3, 4, 5)) -> dict[int, str]:
    """Runs for several k of one sweep; k=5 is the band partition, others merge/split bands."""
    sweep = uuid.uuid4().hex
    out = {}
    for i, k in enumerate(ks):
        labels = np.minimum(m.band, k - 1) if k <= 5 else np.where(m.lat > -23, 5, m.band)
        out[k] = write_run(lake, m.name, m.location_ids, m.vectors, labels.astype(np.int64), m.model, sweep_id=sweep,
                           created_offset_s=i, inertia=1000.0 / k, silhouette=0.2 + 0.05 * min(k, 5) - 0.02 * max(0, k - 5))
    return out


def run_ref(lake: Lake, run_id: str):
    from svcluster.tasks.cluster.runs import resolve_run

    return resolve_run(lake, run_id)
