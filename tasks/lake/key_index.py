"""Which keys a table's data files hold, as 64-bit hashes read once per file: the filter that lets
a keyed write of new rows be an append instead of a merge.

A merge finds the rows it replaces by scanning the whole table, so its cost grows with the table.
Most keyed writes (a fetch or embed batch) bring only new keys. ``KeyIndex`` keeps, per data file,
the sorted hashes of its keys (read once, key columns only; a file this process appended is
indexed with the hashes it wrote, not read back); a batch none of whose hashes is in any
file is new for sure and is appended; one that may match (a hash in a file: a real match or a
64-bit collision) takes the merge. The cost of the check is the batch's size times the number of
files, not the table's rows. Files are immutable in Delta, so an entry never goes stale; entries of
files the table no longer uses are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from svcluster.tasks.lake.schemas import TableSpec


def key_columns(spec: TableSpec, rows: pa.Table) -> pa.Table:
    """The key columns of ``rows`` in the table's types (a column the rows lack is null)."""
    cols = []
    for name in spec.key:
        kind = spec.schema.field(name).type
        col = rows.column(name) if name in rows.column_names else pa.nulls(rows.num_rows, kind)
        cols.append(col.cast(kind))
    return pa.table(cols, names=list(spec.key))


def open_file(uri: str, filesystem) -> BinaryIO:
    """A file of a table (data or log) for reading; ``filesystem``: the lake's fsspec filesystem,
    None for local paths."""
    path = uri.removeprefix("file://")
    return filesystem.open(path, "rb") if filesystem is not None else open(path, "rb")


def read_data_file(uri: str, filesystem, columns: Sequence[str] | None = None) -> pa.Table:
    """A data file of a table (only the ``columns`` it has, when given)."""
    with open_file(uri, filesystem) as f:
        pf = pq.ParquetFile(f)
        if columns is not None:
            columns = [c for c in columns if c in pf.schema_arrow.names]
        return pf.read(columns=columns)


class KeyHasher:
    """Hashes of key tuples, computed by DuckDB (``hash(k1, k2, ...)``; null-safe: a null part
    hashes to a fixed value)."""

    def __init__(self) -> None:
        self._db: duckdb.DuckDBPyConnection | None = None  # made on the first write, not with every Lake
        self._lock = threading.Lock()

    def __call__(self, keys: pa.Table) -> np.ndarray:
        if keys.num_rows == 0:
            return np.empty(0, np.uint64)
        args = ", ".join('"' + c.replace('"', '""') + '"' for c in keys.column_names)
        with self._lock:
            if self._db is None:
                self._db = duckdb.connect()
            self._db.register("keys_to_hash", keys)
            try:
                out = self._db.sql(f"SELECT hash({args}) AS h FROM keys_to_hash").fetchnumpy()["h"]
            finally:
                self._db.unregister("keys_to_hash")
        return np.asarray(out, dtype=np.uint64)


class KeyIndex:
    """Per data file of one table: the sorted hashes of its keys."""

    def __init__(self, spec: TableSpec, filesystem, hasher: KeyHasher):
        self.spec = spec
        self.filesystem = filesystem  # None: local paths
        self.hasher = hasher
        self._files: dict[str, np.ndarray] = {}

    def read_keys(self, uri: str) -> pa.Table:
        """The key columns of one data file (columns it was written without are null)."""
        return key_columns(self.spec, read_data_file(uri, self.filesystem, self.spec.key))

    def sync(self, files: Iterable[str]) -> None:
        """Index the files not indexed yet; forget those not given (no longer the table's)."""
        files = list(files)
        current = set(files)
        for gone in [f for f in self._files if f not in current]:
            del self._files[gone]
        for f in files:
            if f not in self._files:
                self._files[f] = np.sort(self.hasher(self.read_keys(f)))

    def add(self, uri: str, hashes: np.ndarray) -> None:
        """Index a file this process just wrote, whose keys' hashes it knows (not read back)."""
        self._files[uri] = np.sort(hashes)

    def may_hold(self, hashes: np.ndarray, files: Sequence[str] | None = None) -> bool:
        """Whether any of ``hashes`` is in the (given, else every indexed) files."""
        if hashes.size == 0:
            return False
        hashes = np.sort(hashes)  # sorted needles: each file's lookups walk its array in order
        for f in self._files if files is None else files:
            held = self._files.get(f)
            if held is None or held.size == 0:
                continue
            at = np.searchsorted(held, hashes)
            at[at == held.size] = 0
            if np.any(held[at] == hashes):
                return True
        return False
