"""Cluster runs: committing one (its row, assignments and near-duplicate pairs in one commit);
finding one by name, a run_id (or a unique prefix of one) or ``MAP@vN``; how a run stands
against its map's current version; and which run is its previous version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.errors import NotFoundError
from svcluster.tasks.lake.schemas import ASSIGNMENT, DUPLICATE_PAIR, nested_list
from svcluster.tasks.lake.store import Lake


def commit_run(lake: Lake, row: dict[str, Any], assignments: pa.Table, duplicates: pa.Table | None = None) -> None:
    """Write a run as one commit of ``cluster_runs``: ``row`` (its columns) with ``assignments``
    (location_id, cluster, distance) and ``duplicates`` (location_a < location_b, cosine) as the
    lists of its ``assignments`` and ``duplicates`` columns. Readers see all of it or nothing."""
    table = pa.Table.from_pylist([row])
    for name, rows, kind in (("assignments", assignments, ASSIGNMENT), ("duplicates", duplicates, DUPLICATE_PAIR)):
        table = table.append_column(name, nested_list(kind, rows, [0, 0 if rows is None else rows.num_rows]))
    lake.append("cluster_runs", table)


@dataclass(frozen=True)
class RunRef:
    """A committed cluster run: its id, its map, its ``MAP@vN`` name and its k.

    ``stale``: the run was made on an earlier version of its map (the map was re-ingested with
    other content since), so places added since are not in it and places removed since are."""

    run_id: str
    map: str
    name: str
    k: int
    stale: bool = False

    @property
    def stale_note(self) -> str | None:
        """One line saying the run is of an earlier version of its map (None when it is not)."""
        if not self.stale:
            return None
        return (
            f"{self.name} was made on an earlier version of map {self.map!r} (it was re-ingested with other "
            f"content since); run `svcluster cluster --map {self.map}` for a run of the current version"
        )


@dataclass(frozen=True)
class RunCoverage:
    """The objects (and places) of a run's map today, against the run: in the run (tagged by an
    export), left out although their place has an embedding of the run's kind (the run was made
    before it, e.g. on an earlier version of the map), or left out for want of an embedding."""

    objects: int
    objects_in_run: int
    objects_embedded_not_in_run: int
    objects_without_embedding: int
    places: int
    places_in_run: int
    places_embedded_not_in_run: int
    places_without_embedding: int
    run_places_gone: int  # places the run assigned that the map no longer has


def resolve_run(lake: Lake, ref: str) -> RunRef:
    """The run ``ref`` names; NotFoundError when none or several match."""
    rows = lake.query(load_sql("cluster/resolve_run"), {"ref": ref}).to_pylist()
    if not rows:
        raise NotFoundError(f"no cluster run named {ref!r} (see `svcluster runs`)")
    if len({r["run_id"] for r in rows}) > 1:
        raise NotFoundError(f"{ref!r} matches several runs: {', '.join(r['name'] for r in rows)}")
    return RunRef(**rows[0])


def previous_version(lake: Lake, map_name: str, run_id: str) -> RunRef | None:
    """The previous version of the committed run ``run_id`` of ``map_name``, or None: the map's
    latest run made before it with the same k, else its latest earlier run of any k, never a run
    of its own sweep (the same parameters, another k). The one rule
    (``sql/cluster/previous_version.sql``) for the run summary and the report."""
    rows = lake.query(load_sql("cluster/previous_version"), {"map": map_name, "run": run_id}).to_pylist()
    return RunRef(**rows[0]) if rows else None


def run_coverage(lake: Lake, run: RunRef) -> RunCoverage:
    """How the map's current objects and places stand against ``run`` (see RunCoverage)."""
    return RunCoverage(**lake.query(load_sql("cluster/run_coverage"), {"run": run.run_id}).to_pylist()[0])
