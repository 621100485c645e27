"""Names for clusters: the curated descriptions that best match each cluster's centroid.

A cluster's centroid is the mean of its locations' L2-normalised embeddings, re-normalised. Each
description is embedded by the run model's text tower as ``"a photo of <description>"``; its
score for a cluster is the cosine between the two. Descriptions are ranked per cluster by their
*lift* (score minus the description's mean score over all the run's clusters) so that clusters
get what sets them apart, not the same generic best match. Names are stored in the lake table
``cluster_names`` (runs stay immutable). A model without a text tower (the ``baseline``
embedder) gets no names, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.embed.models import text_features
from svcluster.tasks.cluster.runs import RunRef, resolve_run

PROMPT_TEMPLATE = "a photo of {}"
NO_TEXT_TOWER = "no names: the baseline embedder has no text tower"
DEFAULT_TOP = 3

# Short descriptions of what a street-level view can look like: terrain, vegetation, road,
# buildings, weather and light. Order matters only to break exact ties (earlier wins).
DESCRIPTIONS: tuple[str, ...] = (
    # terrain
    "a desert road",
    "a snowy mountain pass",
    "rolling green hills",
    "a flat dry plain",
    "a rocky canyon",
    "a coastal road by the sea",
    "a sandy beach",
    "a river valley",
    "a lake shore",
    "steep mountains",
    "a volcano on the horizon",
    "a salt flat",
    "a high plateau",
    "glaciers and fjords",
    # vegetation
    "a dense green forest",
    "a pine forest",
    "a eucalyptus plantation",
    "a vineyard",
    "farm fields",
    "orchards",
    "dry shrubland",
    "windswept grassland steppe",
    "a palm-lined road",
    "a temperate rainforest",
    "bare land without vegetation",
    "autumn trees",
    # road
    "a paved highway",
    "a gravel road",
    "a dirt track",
    "a narrow country lane",
    "a wide divided motorway",
    "a road with a yellow centre line",
    "a road with a white centre line",
    "a winding mountain road",
    "a straight road to the horizon",
    "a road with guardrails",
    "a bridge",
    # buildings
    "a busy city street",
    "a small town street",
    "a rural village",
    "a suburban neighbourhood",
    "tall apartment buildings",
    "colourful houses",
    "a farmhouse",
    "an industrial area",
    "a mining site",
    "a port with boats",
    "an empty road with no buildings",
    "a petrol station",
    # weather and light
    "a sunny day with a clear blue sky",
    "an overcast day",
    "a rainy day",
    "fog and mist",
    "snow on the ground",
    "low sun and long shadows",
    "dusk light",
    "harsh midday light",
    "dramatic clouds",
    "hazy dusty air",
    "a wet road after rain",
)


@dataclass(frozen=True)
class ClusterName:
    """One description of a cluster: its rank (1 = best), cosine score and lift."""

    cluster: int
    rank: int
    name: str
    score: float
    lift: float


@dataclass(frozen=True)
class NamingResult:
    """The names given to a run's clusters, or why there are none (``reason``)."""

    run_id: str
    run: str
    model: str
    names: dict[int, list[ClusterName]] = field(default_factory=dict)
    reason: str | None = None
    stored: bool = False


@dataclass(frozen=True)
class RunVectors:
    """The embeddings a run clustered: one L2-normalised row per location, with its cluster."""

    location_ids: list[str]
    clusters: np.ndarray  # int32, shape (n,)
    vectors: np.ndarray  # float32, shape (n, dim)


def prompts_for(descriptions: tuple[str, ...] | list[str] = DESCRIPTIONS) -> list[str]:
    """The text the model reads for each description."""
    return [PROMPT_TEMPLATE.format(d) for d in descriptions]


def load_run_vectors(lake: Lake, run_id: str) -> RunVectors:
    """The run's embeddings (same model/pooling/precision as the run), normalised."""
    table = lake.query(load_sql("cluster/run_vectors"), {"run": run_id})
    return vectors_from_arrow(table)


def vectors_from_arrow(table: pa.Table) -> RunVectors:
    ids = table.column("location_id").to_pylist()
    clusters = table.column("cluster").to_numpy(zero_copy_only=False).astype(np.int32)
    n = len(ids)
    if n == 0:
        return RunVectors([], clusters, np.zeros((0, 0), np.float32))
    col = table.column("vector").combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size % n:
        raise SvclusterError("the run's embeddings do not all have the same dimension")
    vectors = flat.reshape(n, flat.size // n)
    return RunVectors(ids, clusters, normalise_rows(vectors))


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms == 0, 1.0, norms)).astype(np.float32, copy=False)


def cluster_centroids(clusters: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster numbers, centroids): the re-normalised mean of each cluster's normalised vectors."""
    ids, inverse = np.unique(clusters, return_inverse=True)
    sums = np.zeros((len(ids), vectors.shape[1]), np.float64)
    np.add.at(sums, inverse, normalise_rows(vectors))
    return ids, normalise_rows(sums.astype(np.float32))


def rank_descriptions(
    cluster_ids: np.ndarray, centroids: np.ndarray, text: np.ndarray, descriptions: list[str] | tuple[str, ...], top: int
) -> dict[int, list[ClusterName]]:
    """The ``top`` descriptions of each cluster by lift; ties go to the earlier description."""
    scores = centroids.astype(np.float64) @ normalise_rows(text).astype(np.float64).T  # (clusters, prompts)
    lift = scores - scores.mean(axis=0, keepdims=True)
    order_index = np.arange(scores.shape[1])
    out: dict[int, list[ClusterName]] = {}
    for row, cluster in enumerate(cluster_ids):
        # lexsort: last key is primary -> sort by -lift, then by description index.
        order = np.lexsort((order_index, -np.round(lift[row], 7)))[:top]
        out[int(cluster)] = [
            ClusterName(int(cluster), rank + 1, descriptions[j], float(scores[row, j]), float(lift[row, j]))
            for rank, j in enumerate(order)
        ]
    return out


def name_clusters(
    lake: Lake,
    run: str | RunRef,
    *,
    top: int = DEFAULT_TOP,
    descriptions: tuple[str, ...] | list[str] = DESCRIPTIONS,
    store: bool = True,
) -> NamingResult:
    """Name every cluster of ``run`` with the model's text tower and store the names.

    Deterministic: the same run and model always give the same names in the same order.
    """
    ref = run if isinstance(run, RunRef) else resolve_run(lake, run)
    rows = lake.query(load_sql("report/run"), {"run": ref.run_id}).to_pylist()
    if not rows:
        raise NotFoundError(f"no cluster run {ref.run_id!r}")
    model = rows[0]["model"] or "baseline"
    if model == "baseline":
        return NamingResult(ref.run_id, ref.name, model, reason=NO_TEXT_TOWER)
    data = load_run_vectors(lake, ref.run_id)
    if not data.location_ids:
        raise NotFoundError(f"run {ref.name}: no embeddings of model {model!r} found for its locations")
    text = text_features(model, prompts_for(descriptions))
    if text is None:
        return NamingResult(ref.run_id, ref.name, model, reason=f"no names: the model {model!r} has no text tower")
    if text.shape[1] != data.vectors.shape[1]:
        raise SvclusterError(
            f"run {ref.name}: text embeddings of {model!r} have {text.shape[1]} dimensions, "
            f"its image embeddings {data.vectors.shape[1]}"
        )
    clustered = data.clusters >= 0  # HDBSCAN's noise (-1) is no cluster: it gets no name
    if not clustered.any():
        return NamingResult(ref.run_id, ref.name, model, reason="no names: every place of the run is noise")
    cluster_ids, centroids = cluster_centroids(data.clusters[clustered], data.vectors[clustered])
    names = rank_descriptions(cluster_ids, centroids, text, list(descriptions), top)
    if store:
        write_names(lake, ref.run_id, model, names)
    return NamingResult(ref.run_id, ref.name, model, names, stored=store)


def write_names(lake: Lake, run_id: str, model: str, names: dict[int, list[ClusterName]]) -> None:
    """Add the names as rows of ``cluster_names`` (a rerun's rows supersede these)."""
    flat = [n for ranked in names.values() for n in ranked]
    lake.append(
        "cluster_names",
        pa.table(
            {
                "run_id": [run_id] * len(flat),
                "cluster": pa.array([n.cluster for n in flat], pa.int32()),
                "rank": pa.array([n.rank for n in flat], pa.int32()),
                "name": [n.name for n in flat],
                "score": pa.array([n.score for n in flat], pa.float32()),
                "lift": pa.array([n.lift for n in flat], pa.float32()),
                "model": [model] * len(flat),
            }
        ),
    )


def cluster_names(lake: Lake, run_id: str) -> dict[int, list[str]]:
    """The stored names of each cluster of a run, best first ({} when it has none)."""
    out: dict[int, list[str]] = {}
    for row in lake.query(load_sql("cluster/names_of_run"), {"run": run_id}).to_pylist():
        out.setdefault(int(row["cluster"]), []).append(row["name"])
    return out


def best_names(lake: Lake, map_name: str | None = None) -> dict[str, dict[int, str]]:
    """The best name of each cluster, per run id (runs without names are absent)."""
    out: dict[str, dict[int, str]] = {}
    for row in lake.query(load_sql("cluster/names_best"), {"map": map_name}).to_pylist():
        out.setdefault(row["run_id"], {})[int(row["cluster"])] = row["name"]
    return out


def require_names(lake: Lake, run: RunRef) -> dict[int, list[str]]:
    """The run's names; a clear error when it has none (``{name}`` in a tag needs them)."""
    names = cluster_names(lake, run.run_id)
    if names:
        return names
    rows = lake.query(load_sql("report/run"), {"run": run.run_id}).to_pylist()
    model = (rows[0]["model"] if rows else None) or "baseline"
    if model == "baseline":
        raise SvclusterError(f"--tag-format uses {{name}} but run {run.name} has {NO_TEXT_TOWER}")
    raise SvclusterError(f"--tag-format uses {{name}} but run {run.name} has no cluster names yet: run `svcluster names {run.name}`")
