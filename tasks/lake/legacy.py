"""The previous lake format, kept to read it once and convert it (``svcluster lake migrate``).

Until issue 17 a table was a folder of immutable Parquet files under ``tables/<table>/``:
``part-<time>-<uuid>.parquet`` (rows a step added), ``key-<hash>.parquet`` (one file per map that
a re-ingest replaced whole) and ``schema-<hash>.parquet`` (zero rows: the table's columns). Rows
were only added; a row superseding another had the same key and a later ``written_at``, and the
views kept the latest row per key (``cluster_runs``: the first; ``cluster_assignments``: only
those of a run that has its row). Blobs and caches had the layout they still have.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.delta import latest_per_key
from svcluster.tasks.lake.schemas import TableSpec


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
