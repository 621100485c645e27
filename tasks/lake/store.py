"""The lake: the only code that reads or writes storage (a local folder or ``s3://``).

Layout under the root URI::

    tables/<table>/                              a Delta Lake table (``deltalake``, see delta.py):
        _delta_log/<version>.json                  its commits (one per write: all or nothing)
        part-*.parquet                             its data files (plain Parquet)
        _svcluster_schema-<hash>.parquet           zero rows: its columns, for the duckdb CLI file
    blobs/<sha256[:2]>/<sha256>.<ext>            content-addressed image bytes
    cache/vectors/<fingerprint>.f32              matrices of vectors already read (a cache)
    svcluster.sql                                views for the plain ``duckdb`` CLI (local lakes):
                                                 ``cd LAKE && duckdb -init svcluster.sql``; it
                                                 reads each table's Delta log for its files, and
                                                 the root is the folder DuckDB runs in, so a
                                                 copied or moved lake opens as itself

A lake is opened in one of three ways (``open_lake(uri, mode=...)``): ``create`` makes it if
it is not there (the commands that bring a map in: ingest, run, demo); ``write`` needs it to
exist and creates any table it lacks (fetch, embed, cluster, ...); ``read`` needs it to exist
and writes nothing at all, so a lake the user cannot write still answers (runs, sql, compare,
export, report; a table it lacks reads as empty). A place with no ``tables/`` folder holds no
lake: a mistyped ``--lake`` is an error for the commands that do not create one, never a new
empty lake. A lake of the previous format (folders of Parquet parts, ``legacy.py``) is refused
with the command that converts it: ``svcluster lake migrate``.

Tables are written by merge commits (``delta.py``); DuckDB reads them through the views in
``sql/lake/views.sql`` over ``lake_<table>``, the Parquet files of each table's current version.
Blobs and other files appear atomically: locally written under ``_tmp/`` and renamed into place;
on S3 a PUT is atomic.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake.exceptions import DeltaError

from svcluster.sql import catalog_sql
from svcluster.tasks.errors import LakeError, NoLakeError, ReadOnlyLakeError
from svcluster.tasks.files import atomic_write
from svcluster.tasks.lake.delta import Commit, DeltaTables, TableState, for_delta, latest_per_key, parse_as_of, versions_at
from svcluster.tasks.lake.s3_reads import TableFiles, s3_endpoint, table_reader_fs
from svcluster.tasks.lake.storage_errors import STORAGE_ERRORS
from svcluster.tasks.lake.table_needs import tables_read
from svcluster.tasks.lake.schemas import TABLES, TableSpec

TMP_DIR = "_tmp"
# A keyed write that leaves a table with more data files than this compacts it, so every table
# keeps a bounded number of files however many batches wrote it.
MAX_FILES_PER_TABLE = 32
TARGET_FILE_BYTES = 128 * 1024 * 1024  # a compaction's target size of a data file
INIT_FILE = "svcluster.sql"  # the views for the plain duckdb CLI, at a local lake's root
LakeMode = Literal["create", "write", "read"]


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _not_writable(exc: BaseException) -> bool:
    """Whether a storage error says the lake may not be written here (permissions, a
    read-only filesystem, an immutable folder, S3's AccessDenied), rather than a fault."""
    return isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS)

def _refused(exc: BaseException) -> bool:
    """``_not_writable``, also for deltalake's errors (storage errors as text)."""
    text = str(exc)
    return _not_writable(exc) or any(
        m in text for m in ("Permission denied", "Read-only file system", "Operation not permitted", "AccessDenied")
    )


STALE_TMP_SECONDS = 3600


def normalise_uri(uri: str) -> str:
    """A lake URI as stored and compared: absolute for folders, without a trailing slash."""
    if "://" in uri and not uri.startswith("file://"):
        return uri.rstrip("/")
    path = uri.removeprefix("file://")
    return str(Path(path).expanduser().resolve())


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


Connection = duckdb.DuckDBPyConnection  # what ``Lake.connect`` returns; other modules name it by this


@dataclass
class _Bound:
    """A lake's view database in this process: the states of the tables bound (the others read as
    empty), and the filesystem its S3 reads go through (None for a local lake)."""

    db: duckdb.DuckDBPyConnection
    states: Mapping[str, TableState]
    reader: TableFiles | None


# The lakes' view databases in this process (see Lake.connect), by root, filesystem and pid;
# the least recently used go first beyond a few (open cursors keep theirs alive until closed).
_DATABASES: OrderedDict[tuple[str, Any, int], _Bound] = OrderedDict()
_DATABASES_KEPT = 8
_DATABASES_LOCK = threading.Lock()


class Lake:
    """A lake at a root URI. Cheap to create; ``open_lake`` also makes sure its tables exist."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None):
        self.uri = normalise_uri(uri)
        options = dict(storage_options or {})
        self.is_local = not self.uri.startswith(("s3://", "s3a://"))
        if not self.is_local:
            # Other processes add files to the lake: never answer a listing from a stale cache.
            options.setdefault("use_listings_cache", False)
        self._fs_options = options
        self.root = self.uri if self.is_local else self.uri.split("://", 1)[1]
        # An S3 lake's commit checks go through delta-rs (s3_objects.py); s3fs is made when needed.
        self.delta = DeltaTables(self.root_url, delta_storage_options(self.uri, options), None if self.is_local else lambda: self.fs)
        self.objects = self.delta.objects
        self._first_commits: set[str] = set()

    @functools.cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the lake's root (on S3 made on first use: importing s3fs is
        most of what a reader that finds everything in the machine cache would spend)."""
        return fsspec.core.url_to_fs(self.uri, **self._fs_options)[0]

    # ---- paths -----------------------------------------------------------------------------
    def path(self, relpath: str) -> str:
        """The filesystem path of a path relative to the lake root (never outside it)."""
        rel = relpath.replace("\\", "/").lstrip("/")
        if any(part in ("..", "") for part in rel.split("/")):
            raise LakeError(f"refusing a lake path outside the lake: {relpath!r}")
        return f"{self.root}/{rel}"

    def url(self, relpath: str) -> str:
        """The URI of a lake-relative path, as DuckDB and users see it."""
        if self.is_local:
            return self.path(relpath)
        return f"{self.uri}/{relpath}"

    @property
    def root_url(self) -> str:
        """The root as DuckDB sees it: an absolute folder or ``s3://bucket/prefix``."""
        return self.root if self.is_local else self.uri


    # ---- set-up ----------------------------------------------------------------------------
    def is_lake(self) -> bool:
        """Whether a lake is here: its ``tables/`` folder exists (a missing or empty folder, a
        file, or a bucket prefix with nothing of svcluster's is not a lake)."""
        try:
            if self.is_local:
                return os.path.isdir(self.path("tables"))
            return self._has_first_commit("maps") or bool(self.fs.isdir(self.path("tables")))
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot reach the lake at {self.uri}: {_reason(exc)}") from None

    def require(self) -> "Lake":
        """This lake, or NoLakeError when there is none at its root (nothing is created)."""
        if not self.is_lake():
            raise NoLakeError(
                f"no lake at {self.uri} (`svcluster ingest MAP.json` creates one; --lake or SVCLUSTER_LAKE names another)"
            )
        return self

    def is_legacy(self) -> bool:
        """Whether the lake is of the previous format (tables as folders of Parquet parts, no
        Delta log): ``svcluster lake migrate`` converts it."""
        folder = "tables/maps"
        return (
            not self._has_first_commit("maps")
            and self.exists(folder)
            and any(p.endswith(".parquet") for p in self.list(folder))
            and not self.delta.exists("maps")
        )

    def _has_first_commit(self, table: str) -> bool:
        """Whether the table's first Delta commit is there: one file check, much cheaper than
        loading the table (svcluster keeps every commit file, so a yes is remembered)."""
        if table not in self._first_commits and self.file_exists(f"tables/{table}/_delta_log/{0:020d}.json"):
            self._first_commits.add(table)
        return table in self._first_commits

    def _refuse_legacy(self) -> None:
        if self.is_legacy():
            raise LakeError(
                f"the lake at {self.uri} is of the previous format (folders of Parquet parts): "
                f"convert it once with `svcluster --lake {self.uri} lake migrate`"
            )
        if self._has_first_commit("cluster_assignments"):
            raise LakeError(
                f"the lake at {self.uri} keeps cluster assignments in a table of their own (svcluster's first "
                f"Delta layout): fold them into their runs once with `svcluster --lake {self.uri} lake migrate`"
            )

    def ensure(self) -> "Lake":
        """Create missing tables (empty Delta tables with their schema files); drop stale temp
        files. Writes nothing when all is in place (so a read-only lake passes when it is complete)."""
        try:
            self._refuse_legacy()
            for t in TABLES.values():
                if not self._has_first_commit(t.name) and not self.delta.exists(t.name):
                    self.delta.create(t)
                schema_file = schema_file_name(t)
                if not self.exists(schema_file):
                    self.write_bytes(schema_file, parquet_bytes(for_delta(t.schema.empty_table())))
            self._remove_stale_tmp()
            catalog = self.duckdb_catalog_sql(relocatable=True).encode()
            if self.is_local and not (self.exists(INIT_FILE) and self.read_bytes(INIT_FILE) == catalog):
                self.write_bytes(INIT_FILE, catalog)  # only when changed (an older lake's pinned an absolute path)
        except (*STORAGE_ERRORS, DeltaError) as exc:
            if _refused(exc):
                raise ReadOnlyLakeError(
                    f"the lake at {self.uri} is read-only here ({_reason(exc)}): this command writes to it; "
                    "only runs, sql, compare, export and report read a lake without writing"
                ) from None
            raise LakeError(f"cannot prepare the lake at {self.uri}: {_reason(exc)}") from None
        return self

    def prepare_read(self) -> "Lake":
        """Ready the lake for reading without writing anything to it (the lake must exist). A
        table the lake lacks (added by a later svcluster) reads as empty."""
        self.require()
        try:
            self._refuse_legacy()
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot reach the lake at {self.uri}: {_reason(exc)}") from None
        return self

    def _remove_stale_tmp(self) -> None:
        if not self.is_local:
            return
        tmp = Path(self.path(TMP_DIR))
        if not tmp.is_dir():
            return
        cutoff = time.time() - STALE_TMP_SECONDS
        for f in tmp.iterdir():
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
            except OSError:
                pass

    # ---- bytes -----------------------------------------------------------------------------
    def exists(self, relpath: str) -> bool:
        try:
            if self.is_local:  # os directly: called per blob, and fsspec's local exists costs more (docs/lake.md, 'Speed')
                return os.path.exists(self.path(relpath))
            return bool(self.fs.exists(self.path(relpath)))
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot reach the lake at {self.uri}: {_reason(exc)}") from None

    def file_exists(self, relpath: str) -> bool:
        """Whether a non-empty file (not a folder) is at ``relpath``: on S3 one GET of its first
        byte, where ``exists`` also lists the prefix when there is no such object."""
        if self.is_local:
            return os.path.isfile(self.path(relpath))
        try:
            return self.objects.exists(self.path(relpath))
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot reach the lake at {self.uri}: {_reason(exc)}") from None

    def read_bytes(self, relpath: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(relpath))
        except FileNotFoundError:
            raise LakeError(f"missing from the lake at {self.uri}: {relpath}") from None
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot read {relpath} in the lake at {self.uri}: {_reason(exc)}") from None

    def read_into(self, relpath: str, buffer: memoryview) -> int:
        """Fill ``buffer`` (writable bytes, e.g. a numpy array's memory) with a file's bytes, read
        in place with no intermediate copy. Returns the file's size; reads nothing when it is not
        the buffer's size."""
        target = self.path(relpath)
        try:
            size = int(self.fs.size(target))
            if size != buffer.nbytes:
                return size
            got = 0
            with self.fs.open(target, "rb") as fh:
                while got < size:
                    n = fh.readinto(buffer[got:])
                    if not n:
                        raise LakeError(f"{relpath} in the lake at {self.uri} ended early")
                    got += n
            return size
        except FileNotFoundError:
            raise LakeError(f"missing from the lake at {self.uri}: {relpath}") from None
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot read {relpath} in the lake at {self.uri}: {_reason(exc)}") from None

    def write_bytes(self, relpath: str, data: bytes | memoryview) -> str:
        """Write a file so that readers see either nothing or all of it. Returns its path."""
        target = self.path(relpath)
        try:
            if self.is_local:
                with atomic_write(target, tmp_dir=self.path(TMP_DIR)) as fh:
                    fh.write(data)
            else:
                self.fs.pipe_file(target, bytes(data) if isinstance(data, memoryview) else data)
        except STORAGE_ERRORS as exc:
            if _not_writable(exc):
                raise ReadOnlyLakeError(
                    f"the lake at {self.uri} is read-only here ({_reason(exc)}): this command writes to it "
                    f"(it could not write {relpath}); only runs, sql, compare, export and report read a lake without writing"
                ) from None
            raise LakeError(f"cannot write {relpath} in the lake at {self.uri}: {_reason(exc)}") from None
        return target

    def delete(self, relpath: str) -> None:
        try:
            self.fs.rm_file(self.path(relpath))
        except FileNotFoundError:
            pass

    def list(self, relprefix: str) -> list[str]:
        """Lake-relative paths of the files under a folder (recursively), sorted."""
        if self.is_local:
            return sorted(self._walk_local(relprefix))
        base = self.path(relprefix)
        if not self.fs.exists(base):
            return []
        root_len = len(self.root) + 1
        found = self.fs.find(base)
        return sorted(f[root_len:] if f.startswith(self.root) else f for f in found)

    def list_modified(self, relprefix: str) -> dict[str, float]:
        """Lake-relative paths of the files under a folder with their modification times
        (seconds since the epoch), from one listing (no request per file on S3)."""
        if self.is_local:
            return self._walk_local(relprefix)
        base = self.path(relprefix)
        if not self.fs.exists(base):
            return {}
        root_len = len(self.root) + 1
        out: dict[str, float] = {}
        for f, info in self.fs.find(base, detail=True).items():
            rel = f[root_len:] if f.startswith(self.root) else f
            stamp = info.get("mtime", info.get("LastModified", info.get("last_modified")))
            if isinstance(stamp, datetime):
                stamp = stamp.timestamp()
            out[rel] = float(stamp) if stamp is not None else 0.0
        return out

    def _walk_local(self, relprefix: str) -> dict[str, float]:
        """Files under a local folder with their mtimes, by ``os.scandir`` (one stat per entry,
        from the directory read: fsspec's local ``find`` is slower, docs/lake.md, 'Speed')."""
        out: dict[str, float] = {}
        stack = [(self.path(relprefix), relprefix.strip("/"))]
        while stack:
            folder, rel = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, name))
                else:
                    try:
                        out[name] = entry.stat().st_mtime
                    except FileNotFoundError:  # removed since the directory was read
                        continue
        return out

    # ---- blobs -----------------------------------------------------------------------------
    def put_blob(self, data: bytes, ext: str = "jpg", sha256: str | None = None) -> tuple[str, str]:
        """Store bytes content-addressed; returns (lake-relative path, sha256). Idempotent."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        rel = f"blobs/{digest[:2]}/{digest}.{ext}"
        if not self.exists(rel):
            self.write_bytes(rel, data)
        return rel, digest

    # ---- tables ----------------------------------------------------------------------------
    def append(self, table: str, rows: pa.Table) -> int | None:
        """Write rows to a table as one commit, upserted on the table's key (a row whose key is
        there replaces it; an immutable table keeps its first). Returns the table's version."""
        if rows.num_rows == 0:
            return None
        table_spec = spec(table)
        rows = latest_per_key(conform(table_spec, rows), table_spec.key)
        version = self._write(lambda: self.delta.upsert(table_spec, rows), table_spec.name)
        if len(self.delta.state(table_spec.name).files) > MAX_FILES_PER_TABLE:  # files left by earlier batches: a few now
            self._write(lambda: self.delta.compact(table_spec.name, TARGET_FILE_BYTES, more_than=MAX_FILES_PER_TABLE), table_spec.name)
            version = self.table_version(table_spec.name)
        return version

    def replace(self, table: str, name: str, rows: pa.Table) -> int:
        """Make ``rows`` all the rows of ``table`` whose first key column is ``name`` (a map
        replaced whole on re-ingest), as one commit."""
        table_spec = spec(table)
        rows = latest_per_key(conform(table_spec, rows), table_spec.key)
        return self._write(lambda: self.delta.merge(table_spec, rows, delete_missing_of=name), table_spec.name)

    def _write(self, commit, table: str | None = None):
        try:
            out = commit()
            if table is not None:
                self._rebind(table)
            return out
        except (OSError, DeltaError) as exc:
            reason = _reason(exc)
            if _refused(exc):
                raise ReadOnlyLakeError(
                    f"the lake at {self.uri} is read-only here ({reason}): this command writes to it; "
                    "only runs, sql, compare, export and report read a lake without writing"
                ) from None
            raise LakeError(f"cannot write to the lake at {self.uri}: {reason}") from None

    def table_files(self, table: str) -> list[str]:
        """Lake-relative paths of the Parquet files holding ``table``'s current rows."""
        state = self.delta.state(spec(table).name)
        return sorted(self._relative(f) for f in state.files)

    def _relative(self, uri: str) -> str:
        for prefix in (self.root_url + "/", self.root + "/"):
            if uri.startswith(prefix):
                return uri[len(prefix):]
        return uri

    def compact(self, table: str, target_size: int | None = None) -> int:
        """Rewrite a table's small files into larger ones (one commit; readers unaffected);
        returns the files removed from the table's current version."""
        return self._write(lambda: self.delta.compact(spec(table).name, target_size), spec(table).name)

    def table_version(self, table: str) -> int | None:
        return self.delta.state(spec(table).name).version

    def history(self, table: str | None = None) -> list[Commit]:
        """Every commit of the lake (or of one table), oldest first, with its lake version."""
        commits = self.delta.commits(list(TABLES), self._commit_infos)
        return [c for c in commits if table is None or c.table == spec(table).name]

    def _commit_infos(self, table: str) -> list[dict[str, Any]] | None:
        """The ``commitInfo`` of every commit of ``table``, read from its ``_delta_log/*.json``
        files (svcluster keeps them all), with its version; [] when the table does not exist,
        None when the log lacks its first commits (then deltalake reads the history)."""
        logs = sorted(p for p in self.list(f"tables/{table}/_delta_log") if p.endswith(".json") and p.count("/") == 3)
        if not logs:
            return []
        versions = [int(p.rsplit("/", 1)[-1].removesuffix(".json")) for p in logs]
        if versions[0] != 0:
            return None
        out = []
        for version, rel in zip(versions, logs):
            for line in self.read_bytes(rel).splitlines():
                if line.startswith(b'{"commitInfo"'):
                    out.append({**json.loads(line)["commitInfo"], "version": version})
                    break
            else:
                out.append({"version": version})
        return out

    def versions_as_of(self, as_of: str | int | datetime) -> dict[str, int | None]:
        """Each table's version in the lake as it was at a lake version or a time."""
        when = parse_as_of(as_of) if isinstance(as_of, str) else as_of
        return versions_at(self.delta.commits(list(TABLES), self._commit_infos), list(TABLES), when)

    def states(self, versions: Mapping[str, int | None] | None = None, names: Sequence[str] | None = None) -> dict[str, TableState]:
        """Every table's files (or those ``names``), now or at the given versions (None: the
        table did not exist)."""
        names = list(TABLES) if names is None else list(names)
        def one(name: str) -> TableState:
            if versions is None:
                return self.delta.state(name)
            if versions.get(name) is None:
                return TableState(name, None, ())
            return self.delta.state(name, versions[name])

        if self.is_local or len(names) < 2:
            return {name: one(name) for name in names}
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="lake-state") as pool:
            return dict(zip(names, pool.map(one, names)))  # on S3 each table's log is requests: at once

    # ---- DuckDB ----------------------------------------------------------------------------
    def connect(self, as_of: str | int | datetime | None = None, reads: Collection[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the lake's views (``sql/lake/views.sql``); close it when done.

        The views read ``lake_<table>``: a view over the Parquet files of the table's current
        Delta version (``read_parquet`` of that list; DuckDB needs no extension). The views are
        defined once per lake and process in an in-memory database, each call returns a new
        cursor on it, and the file lists are brought up to the tables' latest versions first (a
        cheap check of each table's log): a connection sees every commit made before it opened.
        ``reads``: the only tables the connection's queries read (``tables_read`` of their SQL;
        default every table): only those are brought up to date (on S3, requests per table).
        ``as_of`` (a lake version or a time): a private database over the tables as they were.
        """
        if as_of is not None:
            db, _ = self._open_database(self.states(self.versions_as_of(as_of)))
            con = db.cursor()
            con.execute("SET VARIABLE lake_root = ?", [self.root_url])
            return con
        try:
            states = self.states(names=None if reads is None else [t for t in TABLES if t in reads])
        except (OSError, DeltaError) as exc:
            raise LakeError(f"cannot read the lake at {self.uri}: {_reason(exc)}") from None
        key = self._database_key()
        with _DATABASES_LOCK:
            entry = _DATABASES.get(key)
            if entry is None:
                db, reader = self._open_database(states)
                entry = _DATABASES[key] = _Bound(db, states, reader)
                while len(_DATABASES) > _DATABASES_KEPT:
                    _DATABASES.popitem(last=False)
            else:
                changed = [s for name, s in states.items() if entry.states.get(name) != s]
                if changed:
                    _bind_tables(entry.db, changed, entry.reader)
                    entry.states = {**entry.states, **states}
            _DATABASES.move_to_end(key)
            con = entry.db.cursor()
        con.execute("SET VARIABLE lake_root = ?", [self.root_url])
        return con

    def _database_key(self) -> tuple[str, Any, int]:
        return (self.root_url, fsspec.utils.tokenize(self._fs_options), os.getpid())  # a forked child opens its own

    def _rebind(self, table: str) -> None:
        """After this process wrote ``table``: the shared views read its new version, also on
        connections already open (as every view is re-planned on each query)."""
        key = self._database_key()
        with _DATABASES_LOCK:
            entry = _DATABASES.get(key)
            if entry is None or table not in entry.states:
                return  # not bound here yet: bound when a query reads it
            state = self.delta.state(table)
            if entry.states.get(table) != state:
                _bind_tables(entry.db, [state], entry.reader)
                entry.states = {**entry.states, table: state}

    def _open_database(self, states: Mapping[str, TableState]) -> tuple[duckdb.DuckDBPyConnection, TableFiles | None]:
        """A database with the views over these tables' states, and the filesystem its S3 reads
        go through (None for a local lake)."""
        db, reader = duckdb.connect(), None
        db.execute("SET parquet_metadata_cache = true")  # a data file never changes: plan its footer once
        if not self.is_local:
            # DuckDB's own cache of remote files reads them in aligned blocks of up to 2 MiB: a
            # file's footer (a few KiB) would be read as its whole last block, which the machine
            # cache (s3_reads.py) does not keep; without it DuckDB reads what it needs
            db.execute("SET enable_external_file_cache = false")
            reader = table_reader_fs(self._fs_options, self.delta.file_details, self.delta.objects)
            db.register_filesystem(reader)
        db.execute("SET VARIABLE lake_root = ?", [self.root_url])
        try:
            db.execute("CREATE TABLE lake_files (table_name VARCHAR, uri VARCHAR)")
            _bind_tables(db, [states.get(name) or TableState(name, None, ()) for name in TABLES], reader)
            db.execute(catalog_sql())
        except duckdb.Error as exc:
            db.close()
            raise LakeError(f"cannot open the lake at {self.uri}: {exc}") from None
        return db, reader

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run one SQL statement against the lake's views; the result as an Arrow table."""
        with self.connect(reads=tables_read(sql, TABLES)) as con:
            return con.sql(sql, params=params).to_arrow_table()

    def query_script(self, script: str, as_of: str | int | datetime | None = None) -> tuple[pa.Table | None, int]:
        """Run every statement of a user's SQL script in order, on one connection to the views
        (what the script creates lives in this process only; the lake is not written), and
        return the last statement's result (None if it has none) and how many statements
        ran: 0 when the script holds nothing but blanks, comments and semicolons.
        ``as_of``: against the lake as it was at that lake version or time."""
        with self.connect(as_of, reads=tables_read(script, TABLES)) as con:
            statements = con.extract_statements(script)
            if not statements:
                return None, 0
            for statement in statements[:-1]:
                con.execute(statement.query)
                con.complete()  # run to its end; its rows are not the script's result
            last = con.sql(statements[-1].query)
            return (last.to_arrow_table() if last is not None else None), len(statements)

    def iter_batches(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None, batch_rows: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        """Stream a query's result in Arrow record batches (memory stays flat)."""
        with self.connect(reads=tables_read(sql, TABLES)) as con:
            reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
            yield from reader

    def duckdb_catalog_sql(self, relocatable: bool = False) -> str:
        """SQL that gives the plain ``duckdb`` CLI the same views: ``duckdb -init svcluster.sql``.

        It finds each table's current files in the table's Delta log (``_delta_log/*.json``:
        the files added and not removed since), so it never goes stale and needs no DuckDB
        extension. It names the lake by its absolute root (``svcluster sql --catalog``: use it
        from anywhere, for this lake where it is now). ``relocatable`` (a local lake's own
        ``svcluster.sql``): the root is the folder DuckDB runs in, checked to hold this file,
        so the file pins no path and a copied or moved lake opens as itself.
        For an S3 lake it first loads ``httpfs`` and asks DuckDB for an S3 secret from the
        usual AWS credential chain (environment, ~/.aws); it never contains a credential; its
        root is its URI either way.
        """
        tables = cli_table_sql()
        if self.is_local and relocatable:
            return (
                f"-- Generated by svcluster: the lake's views for the duckdb CLI. Run it in the lake folder:\n"
                f"--   cd LAKE && duckdb -init {INIT_FILE}\n"
                "-- The lake is the folder DuckDB runs in (no path is pinned: a copied or moved lake opens as\n"
                "-- itself). From elsewhere: svcluster --lake LAKE sql --catalog > lake.sql; duckdb -init lake.sql\n"
                "SET VARIABLE lake_root = (SELECT CASE WHEN count(*) = 0 THEN error("
                f"'svcluster.sql: run duckdb in the lake folder (cd LAKE && duckdb -init {INIT_FILE})') "
                f"ELSE '.' END FROM glob('{INIT_FILE}'));\n" + tables + catalog_sql()
            )
        root = self.root_url.replace("'", "''")
        head = f"-- Generated by svcluster: open with  duckdb -init {INIT_FILE}\n"
        if not self.is_local:
            head += (
                "INSTALL httpfs;\nLOAD httpfs;\n"
                "-- S3 credentials from the AWS credential chain (env vars, ~/.aws). For an S3-compatible\n"
                "-- server (MinIO, ...) create the secret yourself instead, e.g.\n"
                "--   CREATE SECRET svcluster_s3 (TYPE s3, KEY_ID '...', SECRET '...', REGION 'us-east-1',\n"
                "--                               ENDPOINT 'host:9000', URL_STYLE 'path', USE_SSL false);\n"
                "CREATE SECRET IF NOT EXISTS svcluster_s3 (TYPE s3, PROVIDER credential_chain);\n"
            )
        return head + f"SET VARIABLE lake_root = '{root}';\n" + tables + catalog_sql()


def schema_file_name(table: TableSpec) -> str:
    """A zero-row Parquet file of ``table``'s current columns, for the duckdb CLI's init file
    (its views bind even on an empty table, and a column added later binds on older files).
    Named by a hash of the schema; hidden from Delta (a leading ``_``: no reader or vacuum
    takes it for data)."""
    digest = hashlib.sha256(str(table.schema).encode("utf-8")).hexdigest()[:12]
    return f"tables/{table.name}/_svcluster_schema-{digest}.parquet"


def spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise LakeError(f"unknown lake table {table!r}; tables: {', '.join(TABLES)}") from None


_TYPES: dict[str, list[tuple[str, str]]] = {}


def _column_types(table_spec: TableSpec) -> list[tuple[str, str]]:
    """The table's columns with their DuckDB types (as DuckDB reads the Parquet Delta writes);
    every table's are found at the first call, on one database (opening one takes tens of ms)."""
    if table_spec.name not in _TYPES:
        con = duckdb.connect()
        try:
            for spec_ in {**TABLES, table_spec.name: table_spec}.values():
                rel = con.from_arrow(for_delta(spec_.schema.empty_table()))
                _TYPES[spec_.name] = [(c, str(t)) for c, t in zip(rel.columns, rel.types)]
        finally:
            con.close()
    return _TYPES[table_spec.name]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _files_sql(files: Sequence[str]) -> str:
    """``read_parquet`` of exactly these files, their columns united by name."""
    return "read_parquet([" + ", ".join(_sql_string(f) for f in files) + "], union_by_name = true)"


def _typed_empty(table_spec: TableSpec) -> str:
    cols = ", ".join(f"NULL::{t} AS {_quoted(c)}" for c, t in _column_types(table_spec))
    return f"SELECT {cols} WHERE false"


def table_view_sql(table_spec: TableSpec, files: Sequence[str], file_columns: Mapping[str, str] | None = None) -> str:
    """``lake_<table>``: the table's rows from exactly these Parquet files, with every column of
    the schema (null where the files lack it), also when there is no file.

    ``file_columns``: the files' columns and DuckDB types (``_file_columns``; default: the
    schema's). When every schema column the files have is of the schema's type (svcluster's own
    files), the view is ``SELECT *`` of ``read_parquet`` and a typed NULL for each column they
    lack: DuckDB answers a ``count(*)`` over it from the footers, where under a union with an
    empty typed select it reads a column of every file. Files with other types (another
    writer's) are read through that union, which reconciles them. The view names no column of
    the files: DuckDB 2.0.1 binds a macro parameter to a same-named column a view reads
    (``export_locations``'s ``tag_format``) and fails with "Conflicting column names"."""
    typed_empty = f"CREATE OR REPLACE VIEW lake_{table_spec.name} AS {_typed_empty(table_spec)}"
    if not files:
        return typed_empty + ";"
    files_sql = _files_sql(files)
    types = dict(_column_types(table_spec))
    have = types if file_columns is None else {c.lower(): t for c, t in file_columns.items()}
    if any(have.get(c.lower(), t) != t for c, t in types.items()):
        return f"{typed_empty} UNION ALL BY NAME SELECT * FROM {files_sql};"
    missing = "".join(f", NULL::{t} AS {_quoted(c)}" for c, t in types.items() if c.lower() not in have)
    return f"CREATE OR REPLACE VIEW lake_{table_spec.name} AS SELECT *{missing} FROM {files_sql};"


def _file_columns(con: duckdb.DuckDBPyConnection, files: Sequence[str]) -> dict[str, str]:
    """The columns and DuckDB types of these Parquet files together (from their footers)."""
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {_files_sql(files)}").fetchall()}


def _bind_tables(db: duckdb.DuckDBPyConnection, states: Sequence[TableState], reader: TableFiles | None = None) -> None:
    """(Re)define ``lake_<table>`` and the ``lake_files`` rows of these tables, in one transaction
    (``reader``: the database's S3 filesystem, which reads the files' ends first, at once)."""
    if not states:
        return
    if reader is not None:
        reader.learn_ends(f for s in states for f in s.files)
    con = db.cursor()
    try:
        con.execute("BEGIN TRANSACTION")
        for s in states:
            con.execute("DELETE FROM lake_files WHERE table_name = ?", [s.name])
            if s.files:
                con.executemany("INSERT INTO lake_files VALUES (?, ?)", [[s.name, f] for f in s.files])
            con.execute(table_view_sql(TABLES[s.name], s.files, _file_columns(con, s.files) if s.files else None))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def cli_table_sql() -> str:
    """For the duckdb CLI: each table's current files read from its Delta log, and its view."""
    out = []
    for t in TABLES.values():
        folder = f"getvariable('lake_root') || '/tables/{t.name}"
        out.append(
            f"SET VARIABLE lake_files_{t.name} = (\n"
            f"  SELECT coalesce(list({folder}/' || path ORDER BY path), []::VARCHAR[]) FROM (\n"
            "    SELECT path, arg_max(kind, log) AS kind FROM (\n"
            "      SELECT coalesce(\"add\".path, \"remove\".path) AS path, CASE WHEN \"add\" IS NULL THEN 'remove' ELSE 'add' END AS kind,\n"
            "             filename AS log\n"
            f"      FROM read_json({folder}/_delta_log/*.json', format = 'newline_delimited', filename = true,\n"
            "                     columns = {'add': 'STRUCT(path VARCHAR)', 'remove': 'STRUCT(path VARCHAR)'})\n"
            "      WHERE \"add\" IS NOT NULL OR \"remove\" IS NOT NULL)\n"
            "    GROUP BY path)\n"
            "  WHERE kind = 'add');\n"
            f"CREATE OR REPLACE VIEW lake_{t.name} AS {_typed_empty(t)}\n"
            f"  UNION ALL BY NAME SELECT * FROM read_parquet(list_append(getvariable('lake_files_{t.name}'),\n"
            f"    {folder}/_svcluster_schema-*.parquet'), union_by_name = true);\n"
        )
    return "".join(out)


def keyed_file_name(name: str) -> str:
    """A file name for a key chosen by a user (a map name): hashed, so it can never escape."""
    return "key-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:24] + ".parquet"


def conform(table_spec: TableSpec, rows: pa.Table) -> pa.Table:
    """Rows in the table's column order and types; missing columns null, written_at set.

    A ``vector`` column keeps its fixed-size list type. Extra columns are kept at the end.
    """
    n = rows.num_rows
    arrays, fields = [], []
    for field in table_spec.schema:
        if field.name in rows.column_names:
            col = rows.column(field.name)
            if field.name == "written_at" and col.null_count == n:
                col = pa.array([now_utc()] * n, field.type)
            elif not (field.name == "vector" and pa.types.is_fixed_size_list(col.type)):
                col = col.cast(field.type)
            arrays.append(col)
            fields.append(pa.field(field.name, col.type))
        else:
            value = now_utc() if field.name == "written_at" else None
            arrays.append(pa.array([value] * n, field.type))
            fields.append(field)
    for name in rows.column_names:
        if name not in table_spec.schema.names:
            arrays.append(rows.column(name))
            fields.append(rows.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def parquet_bytes(rows: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(rows, sink, compression="zstd", row_group_size=64_000)
    return sink.getvalue()


def delta_storage_options(uri: str, options: Mapping[str, Any]) -> dict[str, str]:
    """deltalake's storage options for a lake opened with these fsspec options: for S3 the
    endpoint and credentials given (else the environment's, as s3fs reads them), plain HTTP
    allowed for a local endpoint, and a bounded retry so an unreachable endpoint fails fast.
    Concurrent writers on S3 are safe without a lock: delta-rs commits with S3's conditional
    put (If-None-Match), so two commits of one version cannot both succeed."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    out: dict[str, str] = {"max_retries": "3", "retry_timeout": "20s", "timeout": "60s", "connect_timeout": "10s"}
    client = dict(options.get("client_kwargs") or {})
    endpoint = s3_endpoint(options)
    if endpoint:
        out["AWS_ENDPOINT_URL"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    for fs_key, delta_key in (("key", "AWS_ACCESS_KEY_ID"), ("secret", "AWS_SECRET_ACCESS_KEY"), ("token", "AWS_SESSION_TOKEN")):
        if options.get(fs_key):
            out[delta_key] = str(options[fs_key])
    region = client.get("region_name") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["AWS_REGION"] = str(region)
    return out


def open_lake(uri: str, storage_options: Mapping[str, Any] | None = None, *, mode: LakeMode = "create") -> Lake:
    """Open the lake at ``uri``. ``create`` (the default): initialise it if it is not there;
    ``write``: NoLakeError if it is not there, else create the tables it lacks;
    ``read``: NoLakeError if it is not there, and write nothing (see ``Lake.prepare_read``)."""
    lake = Lake(uri, storage_options)
    if mode == "create":
        return lake.ensure()
    if mode == "write":
        return lake.require().ensure()
    if mode == "read":
        return lake.prepare_read()
    raise ValueError(f"open_lake: mode must be create, write or read, not {mode!r}")
