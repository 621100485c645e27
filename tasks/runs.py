"""Cluster runs by name: a run_id (or a unique prefix of one) or ``MAP@vN``."""

from __future__ import annotations

from dataclasses import dataclass

from sql import load_sql
from tasks.errors import NotFoundError
from tasks.lake import Lake


@dataclass(frozen=True)
class RunRef:
    """A committed cluster run: its id, its map, its ``MAP@vN`` name and its k."""

    run_id: str
    map: str
    name: str
    k: int


def resolve_run(lake: Lake, ref: str) -> RunRef:
    """The run ``ref`` names; NotFoundError when none or several match."""
    rows = lake.query(load_sql("resolve_run"), {"ref": ref}).to_pylist()
    if not rows:
        raise NotFoundError(f"no cluster run named {ref!r} (see `svcluster runs`)")
    if len({r["run_id"] for r in rows}) > 1:
        raise NotFoundError(f"{ref!r} matches several runs: {', '.join(r['name'] for r in rows)}")
    return RunRef(**rows[0])
