"""Data for the cluster/compare/geography/export tests: maps ingested for real, embeddings
appended straight to the lake (no model involved), and hand-made runs with known labels."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.cluster.runs import commit_run
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.demo.sample import BANDS, band_of, generate_locations, to_format


def ingest_sample(lake: Lake, folder: Path, n: int = 300, name: str = "chile", fmt: str = "customCoordinates", seed: int = 5) -> list[dict]:
    """Ingest ``n`` sample locations of Chile; returns the locations table rows in input order."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(to_format(generate_locations(n, seed=seed), fmt, name=name)), encoding="utf-8")
    ingest_map(lake, path, name)
    return lake.query("SELECT location_id, lat, lng, region_code, tags FROM locations WHERE map = ? ORDER BY position", [name]).to_pylist()


def ingest_objects(lake: Lake, folder: Path, objects: list[dict], name: str, envelope: dict | None = None) -> list[str]:
    """Ingest hand-written location objects; returns their location_ids in input order."""
    doc = {**envelope, "customCoordinates": objects} if envelope is not None else objects
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    ingest_map(lake, path, name)
    return lake.query("SELECT location_id FROM locations WHERE map = ? ORDER BY position", [name]).column(0).to_pylist()


def append_embeddings(
    lake: Lake,
    location_ids: list[str],
    matrix: np.ndarray,
    model: str = "geolocal/StreetCLIP",
    pooling: str = "mean",
    precision: str = "fp32",
) -> None:
    """Write embeddings as the embed step does: a fixed-size float32 list per location."""
    n, d = matrix.shape
    lake.append(
        "embeddings",
        pa.table(
            {
                "location_id": pa.array(location_ids, pa.string()),
                "model": pa.array([model] * n),
                "pooling": pa.array([pooling] * n),
                "precision": pa.array([precision] * n),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).reshape(-1)), d),
                "dim": pa.array([d] * n, pa.int32()),
                "view_count": pa.array([4] * n, pa.int32()),
                "model_revision": pa.array(["test"] * n),
            }
        ),
    )


def band_matrix(locations: list[dict], dim: int = 16, noise: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors that look like their landscape: one well-separated blob per latitude band.

    Returns (matrix, band index per location)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((len(BANDS), dim)) * 3.0
    truth = np.array([BANDS.index(band_of(loc["lat"])) for loc in locations])
    return (centres[truth] + rng.standard_normal((len(locations), dim)) * noise).astype(np.float32), truth


def write_labels(lake: Lake, map_name: str, run_id: str, location_ids: list[str], labels: list[int], k: int | None = None, minutes: int = 0) -> None:
    """A committed run with exactly these labels (its row and assignments, one commit)."""
    n = len(location_ids)
    assignments = pa.table(
        {
            "location_id": location_ids,
            "cluster": pa.array(labels, pa.int32()),
            "distance": pa.array([0.5] * n, pa.float32()),
        }
    )
    created = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    row = {
        "run_id": run_id,
        "map": map_name,
        "model": "geolocal/StreetCLIP",
        "algorithm": "kmeans",
        "k": k or max(labels) + 1,
        "seed": 0,
        "n_locations": n,
        "created_at": created,
    }
    commit_run(lake, row, assignments)
