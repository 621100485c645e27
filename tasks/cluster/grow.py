"""A map that grew: assign its new places to an earlier run's centroids, or cluster it again.

``svcluster run --grow assign|recluster|auto`` (and the nightly deployment's ``grow``): after a
map is re-ingested with places added, ``assign`` keeps every earlier assignment and gives each
new place its nearest centroid of the map's latest run with the same vector set, k and
algorithm (``svcluster.tasks.cluster.assign``: a new run with the same cluster numbers);
``recluster`` fits a new run (numbered to match the previous one); ``auto`` assigns while the
new places are under ``grow_share`` of the places and re-clusters beyond it. A sweep (several
k) is always clustered. The decision and its reason go in the result's ``grow_note``.
"""

from __future__ import annotations

from dataclasses import replace

from svcluster.sql import load_sql
from svcluster.tasks.cluster.assign import assign_run
from svcluster.tasks.cluster.runs import RunRef, run_coverage
from svcluster.tasks.cluster.step import ClusterOptions, ClusterResult, choose_embeddings, cluster_map, existing_run
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.progress import NullProgress, Progress

def grow_parent(lake: Lake, map_name: str, options: ClusterOptions) -> RunRef | None:
    """The run new places would be assigned to (``sql/cluster/grow_parent.sql``), or None."""
    with lake.connect() as con:
        choice, _ = choose_embeddings(con, map_name, options)
    params = {"map": map_name, "model": choice.model, "pooling": choice.pooling, "precision": choice.precision,
              "k": options.k, "algorithm": options.algorithm}  # fmt: skip
    rows = lake.query(load_sql("cluster/grow_parent"), params).to_pylist()
    return RunRef(**rows[0]) if rows else None


def cluster_or_assign(lake: Lake, map_name: str, options: ClusterOptions, progress: Progress | None = None) -> ClusterResult:
    """Cluster ``map_name`` as ``options.grow`` says (see the module docstring)."""
    options = options.checked()
    progress = progress or NullProgress()
    if options.grow == "recluster" or options.ks:
        why = None if options.grow == "recluster" else "a k sweep is always clustered"
        return _clustered(lake, map_name, options, progress, why)
    parent = grow_parent(lake, map_name, options)
    if parent is None:
        return _clustered(lake, map_name, options, progress, "no earlier run of these embeddings and k to assign to: clustered")
    cov = run_coverage(lake, parent)
    new, total = cov.places_embedded_not_in_run, cov.places_in_run + cov.places_embedded_not_in_run
    if new == 0:
        return _clustered(lake, map_name, options, progress, f"no place is new since {parent.name}")
    share = new / total
    shown = f"{new} new places ({100 * share:.1f} % of {total})"
    if options.grow == "auto" and share >= options.grow_share:
        return _clustered(lake, map_name, options, progress,
                          f"{shown}, not under --grow-share {100 * options.grow_share:g} %: re-clustered, numbered to match")  # fmt: skip
    assigned = assign_run(lake, parent.run_id)
    why = "--grow assign" if options.grow == "assign" else f"under --grow-share {100 * options.grow_share:g} %"
    return _assigned(lake, map_name, parent, assigned.run_id, f"{shown}, {why}: assigned to the centroids of {parent.name}")


def _clustered(lake: Lake, map_name: str, options: ClusterOptions, progress: Progress, why: str | None) -> ClusterResult:
    result = cluster_map(lake, map_name, options, progress)
    return replace(result, grow_note=why) if why else result


def _assigned(lake: Lake, map_name: str, parent: RunRef, run_id: str | None, why: str) -> ClusterResult:
    """The assign run as a cluster result (the parent itself when nothing was new to write)."""
    with lake.connect() as con:
        summary = existing_run(con, run_id or parent.run_id)
    row = lake.query(load_sql("cluster/run_vector_set"), {"run": summary.run_id, "map": map_name}).to_pylist()[0]
    return ClusterResult(
        map=map_name, model=row["model"], pooling=row["pooling"], precision=row["precision"],
        n_locations=row["n_locations"], map_locations=row["map_places"], note=None,
        runs=[replace(summary, reused=run_id is None)], sweep_id=None, grow_note=why,
    )  # fmt: skip
