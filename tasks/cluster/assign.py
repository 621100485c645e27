"""``svcluster assign RUN``: the places of RUN's map added since RUN get RUN's nearest centroid.

The result is a new immutable run of the same map: every assignment of RUN copied unchanged
(same cluster numbers, same distances), and each new place (an embedding of RUN's vector set,
no assignment in RUN) given the cluster whose centroid is nearest by cosine. A centroid is the
re-normalised mean of its cluster's normalised embeddings (``svcluster.tasks.cluster.naming.cluster_centroids``),
in the embedding space even when RUN clustered a PCA projection; noise (cluster -1) has none.
The run row copies RUN's parameters and records ``parent_run_id`` (RUN) and ``method``
(``assign``); ``svcluster runs`` lists it as the next ``MAP@vN``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.cluster.step import code_version, map_checksum
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Lake, now_utc
from svcluster.tasks.cluster.naming import cluster_centroids, load_run_vectors, normalise_rows
from svcluster.tasks.cluster.runs import commit_run, resolve_run
from svcluster.tasks.lake.schemas import TABLES
from svcluster.tasks.cluster.vectors import load_vectors

METHOD = "assign"


@dataclass(frozen=True)
class AssignResult:
    """The run made (None when RUN already covers every embedded place), and what it holds."""

    parent: str
    parent_run_id: str
    run_id: str | None
    map: str
    kept: int  # assignments copied from the parent
    assigned: int  # new places given a centroid
    sizes: dict[int, int]  # new places per cluster
    note: str | None = None


def assign_run(lake: Lake, run: str) -> AssignResult:
    """Give the places of ``run``'s map that ``run`` has not assigned their nearest centroid of
    ``run``, written as a new run (see the module docstring)."""
    ref = resolve_run(lake, run)
    rows = lake.query(load_sql("cluster/assign_parent"), {"run": ref.run_id}).to_pylist()
    if not rows:
        raise NotFoundError(f"no cluster run {ref.run_id!r}")
    parent = rows[0]
    model, pooling, precision = parent["model"], parent["pooling"] or "mean", parent["precision"] or "fp32"
    old = lake.query(load_sql("cluster/assign_parent_assignments"), {"run": ref.run_id})
    data = load_run_vectors(lake, ref.run_id)
    keep = data.clusters >= 0
    if not keep.any():
        raise SvclusterError(f"run {ref.name} has no cluster with an embedding to assign to")
    numbers, centroids = cluster_centroids(data.clusters[keep], data.vectors[keep])
    with lake.connect() as con:
        current = load_vectors(lake, ref.map, model, pooling, precision, con=con)
        sha = map_checksum(con, ref.map)
    new = ~np.isin(current.location_ids, np.array(old.column("location_id").to_pylist(), dtype=object))
    base = AssignResult(ref.name, ref.run_id, None, ref.map, old.num_rows, 0, {})
    if not new.any():
        return AssignResult(**{**base.__dict__, "note": f"every embedded place of {ref.map} is in {ref.name}: nothing to assign"})
    ids = current.location_ids[new]
    vectors = normalise_rows(current.matrix[new])
    best = np.argmax(vectors @ centroids.T, axis=1)
    labels = numbers[best].astype(np.int32)
    distances = np.linalg.norm(vectors - centroids[best], axis=1).astype(np.float32)
    run_id = hashlib.sha256(f"{ref.run_id}\x1e{METHOD}\x1e{current.fingerprint}".encode()).hexdigest()[:16]
    sizes = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    result = AssignResult(ref.name, ref.run_id, run_id, ref.map, old.num_rows, len(ids), sizes)
    if lake.query(load_sql("cluster/assign_parent"), {"run": run_id}).num_rows:
        return AssignResult(**{**result.__dict__, "note": "the same assignment exists already (reused)"})
    write_assign_run(lake, parent, run_id, old, ids, labels, distances, current.fingerprint, sha)
    return result


def write_assign_run(lake, parent: dict, run_id: str, old: pa.Table, ids, labels, distances, fingerprint: str, sha) -> None:
    """The run's row with its assignments (the parent's unchanged, then the new ones), one commit."""
    n_new = len(ids)
    assignments = pa.table(
        {
            "location_id": pa.concat_arrays([old.column("location_id").combine_chunks().cast(pa.string()), pa.array(list(ids), pa.string())]),
            "cluster": pa.concat_arrays([old.column("cluster").combine_chunks().cast(pa.int32()), pa.array(labels, pa.int32())]),
            "distance": pa.concat_arrays([old.column("distance").combine_chunks().cast(pa.float32()), pa.array(distances, pa.float32())]),
        }
    )
    all_labels = np.concatenate([np.array(old.column("cluster").to_pylist(), np.int64), labels.astype(np.int64)])
    counts = np.bincount(all_labels[all_labels >= 0], minlength=int(parent["k"] or 0))
    params = json.loads(parent["params"]) if parent.get("params") else {}
    params.update({"method": METHOD, "parent_run_id": parent["run_id"], "fingerprint": fingerprint})
    row = {name: parent.get(name) for name in TABLES["cluster_runs"].schema.names if name not in ("written_at", "assignments", "duplicates")}
    row.update(
        run_id=run_id,
        params=json.dumps(params, sort_keys=True),
        fingerprint=fingerprint,
        n_locations=old.num_rows + n_new,
        inertia=None,
        silhouette=None,
        sweep_id=None,
        aligned_to=parent["run_id"],
        sizes=json.dumps(counts.tolist()),
        n_iter=None,
        nonempty_clusters=int((counts > 0).sum()),
        map_sha256=sha,
        code_version=code_version(),
        created_at=now_utc(),
        parent_run_id=parent["run_id"],
        method=METHOD,
    )
    commit_run(lake, row, assignments)
