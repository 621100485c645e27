"""The lake's tables as Delta Lake tables (``deltalake``, delta-rs): writes, snapshots, history.

Each table is a Delta table at ``tables/<name>/`` under the lake root: Parquet data files and a
``_delta_log/`` of JSON commits. Every write is one commit, so readers see all of it or nothing.
Keyed writes are upserts on the table's key (``TableSpec.key``): a row with a key already there
replaces it (an immutable table keeps the first), so writing the same rows twice adds nothing.
Rows whose keys the table surely lacks (``KeyIndex``) are appended, so a batch of new rows costs the
same however large the table is; the others take a merge. Two writers of one table both commit: a
merge that conflicts with a commit made meanwhile is run again on the new version
(``COMMIT_ATTEMPTS``), and an append checks the commits made since it looked, replacing in one
commit the rows another writer added with the same keys meanwhile.

A *lake version* counts every commit of every table: version N is the lake after its Nth commit
(in commit-time order), which fixes each table's version (``lake_versions``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from svcluster.tasks.errors import LakeError
from svcluster.tasks.lake.key_index import KeyHasher, KeyIndex, key_columns, open_file, read_data_file
from svcluster.tasks.lake.schemas import TABLES, TableSpec
from svcluster.tasks.lake.s3_objects import S3Objects
from svcluster.tasks.lake.snapshots import FileDetails, Snapshots

COMMIT_ATTEMPTS = 30  # a conflicting commit is retried on the newer version this many times
# Keep every commit file: the duckdb CLI's init file and `lake history` read them. A checkpoint
# every 10 commits bounds what opening a table reads (delta-rs reads every commit since the last
# checkpoint: a request each on S3).
TABLE_CONFIGURATION = {"delta.enableExpiredLogCleanup": "false", "delta.checkpointInterval": "10"}

_STEP = {"name": "svcluster"}  # what the process is doing, recorded in each commit (lake history)


def set_step(name: str) -> None:
    """Name the step (the CLI command) that the commits of this process belong to."""
    _STEP["name"] = name


def current_step() -> str:
    return _STEP["name"]


@dataclass(frozen=True)
class TableState:
    """One table at one version: the Parquet files that hold its rows (as DuckDB reads them)."""

    name: str
    version: int | None  # None: the table does not exist (yet) at that point
    files: tuple[str, ...]


@dataclass(frozen=True)
class Commit:
    """One commit of one table, and the lake version it made."""

    lake_version: int
    table: str
    version: int
    timestamp: datetime
    operation: str
    step: str | None
    rows_added: int | None  # new keys (inserted rows)
    rows_updated: int | None  # keys whose row was replaced
    rows_removed: int | None


def _commit_properties(**extra: Any) -> CommitProperties:
    meta = {"svcluster_step": current_step(), **{k: str(v) for k, v in extra.items()}}
    return CommitProperties(custom_metadata=meta)


def writer_properties(spec: TableSpec) -> WriterProperties | None:
    """How the table's Parquet files are written (None: delta-rs' defaults)."""
    return None if spec.rows_per_group is None else WriterProperties(max_row_group_size=spec.rows_per_group)


def for_delta(rows: pa.Table) -> pa.Table:
    """Rows as Delta stores them: fixed-size lists (vectors) become plain lists."""
    fields, arrays, changed = [], [], False
    for field, col in zip(rows.schema, rows.columns):
        if pa.types.is_fixed_size_list(field.type):
            target = pa.list_(field.type.value_type)
            col, field, changed = col.cast(target), pa.field(field.name, target, field.nullable), True
        arrays.append(col)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if changed else rows


def latest_per_key(rows: pa.Table, key: Sequence[str], earliest: bool = False) -> pa.Table:
    """One row per key: the one with the latest ``written_at`` (the last given on a tie), or
    with ``earliest`` the earliest (the first given)."""
    if rows.num_rows < 2:
        return rows
    order = pa.array(range(rows.num_rows), pa.int64())
    ranked = rows.append_column("__order", order)
    way = "ascending" if earliest else "descending"
    ranked = ranked.take(pc.sort_indices(ranked, [("written_at", way), ("__order", way)]))
    ranked = ranked.append_column("__rank", pa.array(range(ranked.num_rows), pa.int64()))
    first = ranked.group_by(list(key), use_threads=False).aggregate([("__rank", "min")])
    kept = ranked.take(first.column("__rank_min"))
    kept = kept.take(pc.sort_indices(kept, [("__order", "ascending")]))
    return kept.drop_columns(["__order", "__rank"])


_COMPACTIONS: dict[str, threading.Lock] = {}  # per table URI: one compaction at a time in this process
_COMPACTIONS_LOCK = threading.Lock()


def _compaction_lock(table_uri: str) -> threading.Lock:
    with _COMPACTIONS_LOCK:
        return _COMPACTIONS.setdefault(table_uri, threading.Lock())


def _file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def retried(commit: Callable[[], Any]) -> Any:
    """Run ``commit`` again (on the table's newer version) while it loses to a concurrent commit,
    ``COMMIT_ATTEMPTS`` times at most, with a growing random pause."""
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            return commit()
        except CommitFailedError:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05 * (attempt + 1)))
    raise AssertionError("unreachable")


def sql_string(value: str) -> str:
    """A string as a SQL literal (quotes doubled): for the few predicates delta-rs takes as text."""
    return "'" + str(value).replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return sql_string(value)
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return repr(value)
    raise TypeError(f"no SQL literal for a key value of type {type(value).__name__}")


def _key_predicate(columns: Sequence[str], values: Sequence[Any]) -> str:
    """One key as a delta-rs predicate (null-safe)."""
    parts = [f"{_quote(c)} IS NULL" if v is None else f"{_quote(c)} = {_literal(v)}" for c, v in zip(columns, values)]
    return "(" + " AND ".join(parts) + ")"


class DeltaTables:
    """The Delta tables of one lake: opening, creating, writing and reading their states."""

    def __init__(self, root_uri: str, storage_options: Mapping[str, str], filesystem: Callable[[], Any] | None = None):
        self.root_uri = root_uri
        self.options = dict(storage_options)
        self._filesystem = filesystem  # makes the fsspec filesystem that reads data files (None: local)
        self._handles: dict[str, DeltaTable] = {}
        self._lock = threading.Lock()
        self._hasher = KeyHasher()
        self._indexes: dict[str, KeyIndex] = {}
        self._table_locks: dict[str, threading.RLock] = {}  # a table's handle: its updates and writes
        remote = filesystem is not None
        self.objects = S3Objects(self.options) if remote else None  # single-object reads (s3_objects.py)
        self.snapshots = Snapshots(self.objects, self.options.get("AWS_ENDPOINT_URL") or "aws") if remote else None
        self.file_details: dict[str, tuple[int, int]] = {}  # an S3 data file's ``bucket/key``: (size, time in ms)

    @property
    def filesystem(self) -> Any:
        """The fsspec filesystem that reads data files (None: local); made when first needed."""
        return None if self._filesystem is None else self._filesystem()

    def _table_lock(self, table: str) -> threading.RLock:
        with self._lock:
            return self._table_locks.setdefault(table, threading.RLock())

    def uri(self, table: str) -> str:
        return f"{self.root_uri}/tables/{table}"

    def open(self, table: str, version: int | None = None) -> DeltaTable | None:
        """The table (its latest version unless asked), or None if it is not a Delta table."""
        try:
            return DeltaTable(self.uri(table), version=version, storage_options=self.options)
        except TableNotFoundError:
            return None

    def exists(self, table: str) -> bool:
        # (not DeltaTable.is_deltatable: it holds the GIL while it waits for storage, which
        # deadlocks against an S3 server running in this process, as the tests' moto does)
        return self.open(table) is not None

    def create(self, spec: TableSpec) -> None:
        """Create the table empty with its schema (nothing when it is there already)."""
        if self.exists(spec.name):
            return
        try:
            DeltaTable.create(
                self.uri(spec.name), schema=spec.schema, mode="ignore", configuration=TABLE_CONFIGURATION,
                storage_options=self.options, commit_properties=_commit_properties(),
            )
        except (CommitFailedError, DeltaError):
            if not self.exists(spec.name):  # another process created it meanwhile: fine
                raise

    def latest(self, table: str) -> DeltaTable | None:
        """A cached handle brought up to the table's latest version."""
        with self._table_lock(table):
            dt = self._handles.get(table)
            if dt is None:
                dt = self.open(table)
                if dt is None:
                    return None
                self._handles[table] = dt
            else:
                dt.update_incremental()
            return dt

    def state(self, table: str, version: int | None = None) -> TableState:
        """The files holding ``table``'s rows, now or at ``version``."""
        if version is not None:
            dt = self.open(table, version)
            return TableState(table, None, ()) if dt is None else self._state_of(table, dt)
        with self._table_lock(table):
            first = table not in self._handles
            if first and self.snapshots is not None:  # a process that has not opened it yet (S3)
                remembered = self.snapshots.load(self.uri(table))
                if remembered is not None:
                    version, files, details = remembered
                    self._learn(details)
                    return TableState(table, version, files)
            dt = self.latest(table)
            if dt is None:
                return TableState(table, None, ())
            state = self._state_of(table, dt)
            if first and self.snapshots is not None:
                self.snapshots.save(self.uri(table), state.version, state.files, self._details_of(state.files))
            return state

    def _state_of(self, table: str, dt: DeltaTable) -> TableState:
        """An opened table's state; on S3 the details of files not seen before are read from
        its log first (only when its files changed: a state is asked before every query)."""
        state = TableState(table, dt.version(), tuple(dt.file_uris()))
        if self.snapshots is not None and len(self._details_of(state.files)) < len(state.files):
            self._learn(file_details(dt, state.files))
        return state

    def _details_of(self, files: Sequence[str]) -> FileDetails:
        """The learned details of those of ``files`` (URIs) that have them."""
        known = ((f, self.file_details.get(f.split("://", 1)[-1])) for f in files)
        return {f: detail for f, detail in known if detail is not None}

    def _learn(self, details: FileDetails) -> None:
        """Remember the sizes and times of an S3 table's data files (from its log), so that
        reading them asks S3 for nothing but their bytes (``file_details``, ``S3Objects``)."""
        stripped = {uri.split("://", 1)[-1]: detail for uri, detail in details.items()}
        with self._lock:
            self.file_details.update(stripped)
        self.objects.know({key: size for key, (size, _) in stripped.items()})

    # ---- writes -------------------------------------------------------------------------------
    def upsert(self, spec: TableSpec, rows: pa.Table) -> int:
        """Write ``rows`` on the table's key as one commit: appended when the table surely lacks
        every key (``KeyIndex``), else merged. Returns the table's version. An append that loses
        to a concurrent commit (a compaction that removed files it read) is tried again."""
        return retried(lambda: self._upsert_once(spec, rows))

    def _upsert_once(self, spec: TableSpec, rows: pa.Table) -> int:
        with self._table_lock(spec.name):
            dt = self.latest(spec.name)
            if dt is None:
                self.create(spec)
                dt = self.latest(spec.name)
            index = self._indexes.get(spec.name)
            if index is None:
                index = self._indexes[spec.name] = KeyIndex(spec, self.filesystem, self._hasher)
            hashes = self._hasher(key_columns(spec, rows))
            before = set(dt.file_uris())
            index.sync(before)
            if index.may_hold(hashes):
                return self.merge(spec, rows)
            read_version = dt.version()
            write_deltalake(
                dt, for_delta(rows), mode="append", schema_mode="merge", writer_properties=writer_properties(spec),
                commit_properties=_commit_properties(rows=rows.num_rows),
            )
            version = dt.version()  # the write brought the handle to its own commit (with any made before it)
            ours = set(dt.file_uris()) - before
            if version == read_version + 1 and len(ours) == 1:  # the one file added is ours: its keys are known
                index.add(ours.pop(), hashes)
            if version > read_version + 1:  # others committed since we looked: did they add our keys?
                theirs = set(self.open(spec.name, version - 1).file_uris()) - before
                index.sync(before | theirs)
                if index.may_hold(hashes, sorted(theirs)):
                    return self._replace_raced(spec, rows, sorted(theirs), index)
            return version

    def _replace_raced(self, spec: TableSpec, rows: pa.Table, theirs: Sequence[str], index: KeyIndex) -> int:
        """Another writer added some of ``rows``' keys between our look and our append: the
        table holds those keys twice. Replace both copies by one (ours, the later write; theirs
        on an immutable table) in one commit."""
        ours = key_columns(spec, rows)
        mine = {tuple(r.values()): i for i, r in enumerate(ours.to_pylist())}
        raced: set[tuple] = set()
        kept = []
        for f in theirs:
            keys = index.read_keys(f).to_pylist()
            hits = [i for i, r in enumerate(keys) if tuple(r.values()) in mine]
            if hits:
                raced.update(tuple(keys[i].values()) for i in hits)
                if spec.immutable:
                    kept.append(read_data_file(f, self.filesystem).take(hits))
        if not raced:
            return self.latest(spec.name).version()  # a hash collision: no key is there twice
        if spec.immutable:
            winners = pa.concat_tables([for_delta(t) for t in kept], promote_options="permissive")
        else:
            winners = for_delta(rows).take(sorted(mine[k] for k in raced))
        predicate = " OR ".join(_key_predicate(spec.key, k) for k in sorted(raced, key=repr))
        retried(lambda: write_deltalake(
            self.uri(spec.name), winners, mode="overwrite", predicate=predicate, schema_mode="merge",
            writer_properties=writer_properties(spec), storage_options=self.options,
            commit_properties=_commit_properties(rows=winners.num_rows, raced=len(raced)),
        ))
        return self.latest(spec.name).version()

    def merge(self, spec: TableSpec, rows: pa.Table, delete_missing_of: str | None = None) -> int:
        """Upsert ``rows`` on the table's key as one merge commit (retried on a conflict). An
        immutable table only inserts new keys. ``delete_missing_of``: also delete the rows whose
        first key column has this value and that ``rows`` lacks (a map replaced whole). Returns
        the version."""
        rows = for_delta(rows)
        # Null-safe on every key column: a key part may be null (a folder import's map_views row
        # has no size; rows migrated from the previous format may lack a view's settings).
        predicate = " AND ".join(
            f"(t.{_quote(k)} = s.{_quote(k)} OR (t.{_quote(k)} IS NULL AND s.{_quote(k)} IS NULL))" for k in spec.key
        )

        def once() -> int:  # on the table's latest version: again after a conflicting commit
            dt = self.open(spec.name)
            if dt is None:
                self.create(spec)
                dt = self.open(spec.name)
            merger = dt.merge(
                rows, predicate, source_alias="s", target_alias="t", merge_schema=True,
                writer_properties=writer_properties(spec), commit_properties=_commit_properties(rows=rows.num_rows),
            )
            if not spec.immutable:
                merger = merger.when_matched_update_all()
            merger = merger.when_not_matched_insert_all()
            if delete_missing_of is not None:
                merger = merger.when_not_matched_by_source_delete(f"t.{_quote(spec.key[0])} = {sql_string(delete_missing_of)}")
            merger.execute()
            return dt.version()

        return retried(once)

    def insert(self, spec: TableSpec, rows: pa.Table) -> int:
        """Append ``rows`` as they are, with no merge (one commit; a blind append never
        conflicts): for rows known to be new, as a table's first rows (migrate). Returns the version."""
        self.create(spec)
        write_deltalake(
            self.uri(spec.name), for_delta(rows), mode="append", schema_mode="merge",
            writer_properties=writer_properties(spec), storage_options=self.options,
            commit_properties=_commit_properties(rows=rows.num_rows),
        )
        return self.open(spec.name).version()

    def replace_all(self, spec: TableSpec, rows: pa.Table) -> int:
        """Make ``rows`` the table's whole content in one commit (a format change). Returns the version."""
        self.create(spec)
        write_deltalake(
            self.uri(spec.name), for_delta(rows), mode="overwrite", schema_mode="merge",
            writer_properties=writer_properties(spec), storage_options=self.options,
            commit_properties=_commit_properties(rows=rows.num_rows),
        )
        return self.open(spec.name).version()

    def compact(self, table: str, target_size: int | None = None, more_than: int | None = None) -> int:
        """Rewrite the table's small files into files of ``target_size`` bytes (only when it has
        more than ``more_than`` files, if given); returns the files removed. One compaction of a
        table at a time in this process; one that raced another process's is mended."""
        def once() -> int:
            dt = self.open(table)
            if dt is None or (more_than is not None and len(dt.file_uris()) <= more_than):
                return 0  # (another compaction got here first)
            removed = int(dt.optimize.compact(
                target_size=target_size, writer_properties=writer_properties(TABLES[table]),
                commit_properties=_commit_properties(),
            ).get("numFilesRemoved", 0))
            if removed:
                self._mend_double_compaction(table, dt.version())
            return removed

        with _compaction_lock(self.uri(table)):
            return retried(once)

    def _mend_double_compaction(self, table: str, version: int) -> None:
        """delta-rs lets two compactions that read one version both commit (a remove of data it
        only moved is not checked against another's: delta-io/delta-rs#3982), and the rows of
        the files both removed are then in the table twice. When a file this compaction (commit
        ``version``) removed was already gone before it, keep one row per key of what it added."""
        actions = self._commit_actions(table, version)
        removed = {_file_name(a["remove"]["path"]) for a in actions if "remove" in a}
        before = {_file_name(u) for u in self.open(table, version - 1).file_uris()}
        if removed <= before:
            return
        spec = TABLES[table]
        first = spec.key[0]
        values = pa.concat_arrays([
            read_data_file(f"{self.uri(table)}/{a['add']['path']}", self.filesystem, [first]).column(first).combine_chunks()
            for a in actions if "add" in a
        ])
        self.dedupe(spec, pc.unique(values))

    def _commit_actions(self, table: str, version: int) -> list[dict[str, Any]]:
        with open_file(f"{self.uri(table)}/_delta_log/{version:020d}.json", self.filesystem) as f:
            return [json.loads(line) for line in f.read().splitlines() if line.strip()]

    def dedupe(self, spec: TableSpec, first_values: pa.Array) -> int:
        """Keep one row per key among the rows whose first key column is in ``first_values``
        (the latest written; the first on an immutable table), in one commit. Returns the rows
        removed."""
        first = spec.key[0]

        def once() -> int:
            parts = []
            for uri in self.open(spec.name).file_uris():
                rows = read_data_file(uri, self.filesystem)
                hit = pc.is_in(rows.column(first), value_set=first_values)
                if pc.any(hit).as_py():
                    parts.append(rows.filter(hit))
            if not parts:
                return 0
            rows = pa.concat_tables(parts, promote_options="permissive")
            kept = latest_per_key(rows, spec.key, earliest=spec.immutable)
            if kept.num_rows == rows.num_rows:
                return 0
            listed = ", ".join(_literal(v) for v in first_values.to_pylist() if v is not None)
            predicate = f"{_quote(first)} IN ({listed})" if listed else "false"
            if None in first_values.to_pylist():
                predicate += f" OR {_quote(first)} IS NULL"
            write_deltalake(
                self.uri(spec.name), kept, mode="overwrite", predicate=predicate, schema_mode="merge",
                writer_properties=writer_properties(spec), storage_options=self.options,
                commit_properties=_commit_properties(deduplicated=rows.num_rows - kept.num_rows),
            )
            return rows.num_rows - kept.num_rows

        return retried(once)

    def vacuum(self, table: str, retain_hours: float) -> list[str]:
        """Delete the files no version newer than ``retain_hours`` ago refers to; their URIs."""
        dt = self.open(table)
        if dt is None:
            return []
        return list(dt.vacuum(retention_hours=int(retain_hours), dry_run=False, enforce_retention_duration=False,
                              commit_properties=_commit_properties()))

    # ---- history ------------------------------------------------------------------------------
    def commits(self, tables: Sequence[str], read_log: Callable[[str], list[dict[str, Any]] | None] | None = None) -> list[Commit]:
        """Every commit of these tables, oldest first, numbered as lake versions. ``read_log``:
        a table's commit infos read from its log files (None when they are not all there), else
        ``DeltaTable.history()``."""
        raw: list[tuple[int, str, int, dict[str, Any]]] = []
        for table in tables:
            infos = read_log(table) if read_log is not None else None
            if infos is None:
                dt = self.open(table)
                if dt is None:
                    continue
                infos = dt.history()
            for h in infos:
                raw.append((int(h.get("timestamp", 0)), table, int(h["version"]), h))
        raw.sort(key=lambda r: (r[0], r[2], r[1]))
        out = []
        for i, (ts, table, version, h) in enumerate(raw, start=1):
            metrics = h.get("operationMetrics") or {}
            added = metrics.get("num_target_rows_inserted", metrics.get("num_added_rows"))
            removed = metrics.get("num_target_rows_deleted", metrics.get("num_deleted_rows"))
            updated = metrics.get("num_target_rows_updated")
            out.append(Commit(
                i, table, version, datetime.fromtimestamp(ts / 1000, timezone.utc), str(h.get("operation", "")),
                h.get("svcluster_step"), None if added is None else int(added), None if updated is None else int(updated),
                None if removed is None else int(removed),
            ))
        return out


def file_details(dt: DeltaTable, files: Sequence[str]) -> FileDetails:
    """Each of ``files``' size and modification time (ms), as the table's log records them."""
    adds = pa.table(dt.get_add_actions(flatten=False)).select(["path", "size_bytes", "modification_time"])
    root = dt.table_uri.rstrip("/")
    paths, sizes = adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist()
    times = adds.column("modification_time").cast(pa.int64()).to_pylist()
    by_uri = {f"{root}/{p}": (int(n), int(t)) for p, n, t in zip(paths, sizes, times)}
    return {f: by_uri[f] for f in files if f in by_uri}


def versions_at(commits: Sequence[Commit], tables: Sequence[str], as_of: int | datetime) -> dict[str, int | None]:
    """Each table's version in the lake as of lake version ``as_of`` or time ``as_of``."""
    if isinstance(as_of, int):
        if as_of < 0 or as_of > len(commits):
            raise LakeError(f"no lake version {as_of}: the lake has versions 0 to {len(commits)} (svcluster lake history)")
        chosen = commits[:as_of]
    else:
        chosen = [c for c in commits if c.timestamp <= as_of]
    out: dict[str, int | None] = {t: None for t in tables}
    for c in chosen:
        out[c.table] = max(c.version, out[c.table] if out[c.table] is not None else -1)
    return out


def parse_as_of(text: str) -> int | datetime:
    """A lake version number, or an ISO-8601 time (UTC when it names no zone)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise LakeError(f"--as-of {text!r}: give a lake version number or an ISO-8601 time (e.g. 2026-12-01T10:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
