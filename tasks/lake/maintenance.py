"""Keeping a lake small and current: compaction, vacuum of unreferenced table files, and the
one-time conversion of a lake of the previous format (``svcluster lake optimize | vacuum | migrate``).

Orphan blobs and stale vector caches are other steps' business (``tasks/fetch`` knows which blobs
rows refer to, ``tasks/cluster/vectors`` which matrices are current); the CLI runs them with
``vacuum_tables``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.legacy import read_legacy_table
from svcluster.tasks.lake.schemas import TABLES
from svcluster.tasks.lake.store import TARGET_FILE_BYTES, Lake, conform

DEFAULT_RETAIN_HOURS = 168.0  # vacuum keeps a week of versions to time-travel to
LEGACY_FOLDER = "legacy"  # where migrate moves the previous format's table folders


@dataclass(frozen=True)
class TableCompaction:
    """One table before and after a compaction."""

    table: str
    files_before: int
    files_after: int


@dataclass
class VacuumResult:
    """What a vacuum removed: per table, the data files no kept version refers to."""

    retain_hours: float
    files_removed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.files_removed.values())


@dataclass
class MigrateResult:
    """A previous-format lake converted: rows per table, and where the old files were kept."""

    converted: dict[str, int] = field(default_factory=dict)
    kept_at: str | None = None
    already: bool = False


def optimize_lake(lake: Lake, tables: list[str] | None = None, target_size: int = TARGET_FILE_BYTES) -> list[TableCompaction]:
    """Compact every table (or those named) into files of about ``target_size`` bytes."""
    out = []
    for name in tables or list(TABLES):
        before = len(lake.table_files(name))
        if before > 1:
            lake.compact(name, target_size)
        out.append(TableCompaction(name, before, len(lake.table_files(name))))
    return out


def vacuum_tables(lake: Lake, retain_hours: float = DEFAULT_RETAIN_HOURS) -> VacuumResult:
    """Delete the table files that no version of the last ``retain_hours`` refers to (0: every
    file the current versions do not use). Versions older than that can no longer be read."""
    if retain_hours < 0:
        raise LakeError(f"--retain must be 0 or more hours, not {retain_hours}")
    result = VacuumResult(retain_hours)
    for name in TABLES:
        result.files_removed[name] = len(lake.delta.vacuum(name, retain_hours))
    return result


def migrate_lake(lake: Lake) -> MigrateResult:
    """Convert a lake of the previous format in place: each table's rows (as its old views showed
    them) become the first commit of its Delta table; the old folders are kept under
    ``legacy/tables-<time>/`` (delete them once satisfied). Blobs and caches keep their place.
    Resumable: a table already converted is not written again."""
    result = MigrateResult()
    source = _legacy_source(lake)
    if source is None:
        result.already = True
        return result
    if source == "tables":
        kept = f"{LEGACY_FOLDER}/tables-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        try:
            lake.fs.mv(lake.path("tables"), lake.path(kept), recursive=True)
        except OSError as exc:
            raise LakeError(f"cannot move the previous tables of {lake.uri} aside: {exc}") from None
        source = kept
    result.kept_at = source
    lake.ensure()
    for name, table_spec in TABLES.items():
        if lake.delta.latest(name) is not None and lake.delta.latest(name).version() > 0:
            result.converted[name] = -1  # converted by an earlier, interrupted migrate
            continue
        rows = read_legacy_table(lake, f"{source}/{name}", table_spec)
        if name == "cluster_assignments" and rows.num_rows:
            runs = read_legacy_table(lake, f"{source}/cluster_runs", TABLES["cluster_runs"])
            committed = set(runs.column("run_id").to_pylist()) if runs.num_rows else set()
            rows = rows.filter(pc.is_in(rows.column("run_id"), pa.array(sorted(committed), pa.string())))
        if rows.num_rows:  # one row per key already: a plain append, no merge
            lake.delta.insert(table_spec, conform(table_spec, rows))
        result.converted[name] = rows.num_rows
    return result


def _legacy_source(lake: Lake) -> str | None:
    """Where the previous format's tables are: ``tables`` (not moved yet), the latest
    ``legacy/tables-*`` of an interrupted migrate, or None (nothing to convert)."""
    if lake.is_legacy():
        return "tables"
    kept = sorted({p.split("/")[1] for p in lake.list(LEGACY_FOLDER) if p.count("/") >= 2})
    if kept and any((lake.delta.latest(n) is None or lake.delta.latest(n).version() == 0) for n in ("maps",)):
        return f"{LEGACY_FOLDER}/{kept[-1]}"
    return None
