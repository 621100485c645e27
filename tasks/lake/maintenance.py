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
from svcluster.tasks.lake.legacy import SEPARATE_SPECS, nest_run_parts, read_legacy_table
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
    folded: bool = False  # a first-Delta-layout lake: its separate run tables folded into cluster_runs


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
    Resumable: a table already converted is not written again. A lake of the first Delta layout
    (assignments in tables of their own) has them folded into its runs' rows."""
    result = MigrateResult()
    source = _legacy_source(lake)
    if source is None:
        return _fold_separate_tables(lake)
    if source == "tables":
        kept = f"{LEGACY_FOLDER}/tables-{_stamp()}"
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
        if name == "cluster_runs" and rows.num_rows:
            parts = {t: read_legacy_table(lake, f"{source}/{t}", s) for t, s in SEPARATE_SPECS.items()}
            rows = nest_run_parts(rows, parts)
            for t in parts:  # rows of runs whose row never committed are dropped
                result.converted[t] = pc.sum(pc.list_value_length(rows.column(t.removeprefix("cluster_")))).as_py() or 0
        if rows.num_rows:  # one row per key already: a plain append, no merge
            lake.delta.insert(table_spec, conform(table_spec, rows))
        result.converted[name] = rows.num_rows
    return result


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def _fold_separate_tables(lake: Lake) -> MigrateResult:
    """A lake of the first Delta layout: the Delta tables ``cluster_assignments`` and
    ``cluster_duplicates`` become the lists of their runs' rows (one commit rewriting
    ``cluster_runs``), then move to ``legacy/separate-<time>/``. Nothing to do: ``already``."""
    present = [t for t in SEPARATE_SPECS if lake.delta.exists(t)]
    if not present:
        return MigrateResult(already=True)
    spec = TABLES["cluster_runs"]
    runs = lake.delta.open(spec.name)
    rows = spec.schema.empty_table() if runs is None else runs.to_pyarrow_table()
    # runs holding their lists already (written after an interrupted fold's commit) keep them
    bare = pc.is_null(rows.column("assignments")) if "assignments" in rows.column_names else pa.repeat(True, rows.num_rows)
    if pc.any(bare).as_py():
        parts = {t: lake.delta.open(t).to_pyarrow_table() for t in present}
        folded = conform(spec, nest_run_parts(rows.filter(bare), parts))
        whole = pa.concat_tables([folded, conform(spec, rows.filter(pc.invert(bare)))], promote_options="permissive")
        lake.delta.replace_all(spec, whole)
    kept = f"{LEGACY_FOLDER}/separate-{_stamp()}"
    result = MigrateResult(kept_at=kept, folded=True)
    result.converted[spec.name] = rows.num_rows
    for t in present:
        result.converted[t] = lake.delta.open(t).to_pyarrow_table(columns=["run_id"]).num_rows
        try:
            lake.fs.mv(lake.path(f"tables/{t}"), lake.path(f"{kept}/{t}"), recursive=True)
        except OSError as exc:
            raise LakeError(f"cannot move the table {t} of {lake.uri} aside: {exc}") from None
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
