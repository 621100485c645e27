"""The previous lake format, kept to read it once and convert it (``svcluster lake migrate``).

Until issue 17 a table was a folder of immutable Parquet files under ``tables/<table>/``:
``part-<time>-<uuid>.parquet`` (rows a step added), ``key-<hash>.parquet`` (one file per map that
a re-ingest replaced whole) and ``schema-<hash>.parquet`` (zero rows: the table's columns). Rows
were only added; a row superseding another had the same key and a later ``written_at``, and the
views kept the latest row per key (``cluster_runs``: the first; ``cluster_assignments``: only
those of a run that has its row). Blobs and caches had the layout they still have.

The first Delta layout kept a run's assignments and near-duplicate pairs in Delta tables of their
own, ``cluster_assignments`` and ``cluster_duplicates``; they are now lists in the run's row.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.delta import latest_per_key
from svcluster.tasks.lake.schemas import ASSIGNMENT, DUPLICATE_PAIR, TIMESTAMP, TableSpec, nested_list

# Tables of earlier formats whose rows are now the lists of a cluster_runs row (its
# ``assignments`` and ``duplicates`` columns): a run was its row plus rows in these, committed apart.
def _separate(name: str, key: tuple[str, ...], kind: pa.StructType) -> TableSpec:
    """An earlier run table: run_id, the fields of its list's struct, written_at."""
    return TableSpec(name, key, pa.schema([("run_id", pa.string()), *kind, ("written_at", TIMESTAMP)]))


CLUSTER_ASSIGNMENTS = _separate("cluster_assignments", ("run_id", "location_id"), ASSIGNMENT)
CLUSTER_DUPLICATES = _separate("cluster_duplicates", ("run_id", "location_a", "location_b"), DUPLICATE_PAIR)

SEPARATE_TABLES = {CLUSTER_ASSIGNMENTS.name: ("assignments", ASSIGNMENT), CLUSTER_DUPLICATES.name: ("duplicates", DUPLICATE_PAIR)}
SEPARATE_SPECS = {t.name: t for t in (CLUSTER_ASSIGNMENTS, CLUSTER_DUPLICATES)}


def legacy_files(lake, folder: str) -> list[str]:
    """The Parquet files of a previous-format table folder (lake-relative), in write order."""
    return sorted(p for p in lake.list(folder) if p.endswith(".parquet") and "/_delta_log/" not in p)


def read_legacy_table(lake, folder: str, table_spec: TableSpec) -> pa.Table:
    """The rows the previous views showed for one table: the latest row per key (the first of
    an immutable table), from every file of ``folder``."""
    parts = [pq.read_table(io.BytesIO(lake.read_bytes(p))) for p in legacy_files(lake, folder)]
    parts = [p for p in parts if p.num_rows]
    if not parts:
        return table_spec.schema.empty_table()
    try:
        rows = pa.concat_tables(parts, promote_options="permissive")
    except pa.ArrowInvalid as exc:
        raise LakeError(f"cannot read the previous-format table {folder}: its files do not share a schema ({exc})") from None
    if "written_at" not in rows.column_names:
        return rows
    if table_spec.immutable:  # the first row written is the row
        order = pc.sort_indices(rows, [("written_at", "ascending")])
        rows = rows.take(order)
        first = rows.append_column("__i", pa.array(range(rows.num_rows), pa.int64()))
        picked = first.group_by(list(table_spec.key), use_threads=False).aggregate([("__i", "min")])
        return rows.take(picked.column("__i_min"))
    return latest_per_key(rows, table_spec.key)


def nest_run_parts(runs: pa.Table, parts: dict[str, pa.Table]) -> pa.Table:
    """``runs`` with each separate table's rows (``parts``: table name -> rows with a run_id) as
    the list column of their run's row; a run with none gets an empty list. Rows of a run that
    is not in ``runs`` (its row never committed) are dropped, as the old views did."""
    run_ids = runs.column("run_id").to_pylist()
    for table, rows in parts.items():
        column, kind = SEPARATE_TABLES[table]
        if column in runs.column_names:
            runs = runs.drop_columns([column])
        rows = rows.sort_by([("run_id", "ascending")]) if rows.num_rows else rows
        ids = rows.column("run_id").to_pylist() if rows.num_rows else []
        spans: dict[str, tuple[int, int]] = {}
        for i, run_id in enumerate(ids):
            start, _ = spans.get(run_id, (i, i))
            spans[run_id] = (start, i + 1)
        take, offsets = [], [0]
        for run_id in run_ids:
            start, end = spans.get(run_id, (0, 0))
            take.extend(range(start, end))
            offsets.append(len(take))
        picked = rows.take(pa.array(take, pa.int64())) if take else None
        runs = runs.append_column(column, nested_list(kind, picked, offsets))
    return runs
