"""The lake: the only code that reads or writes storage (a local folder or ``s3://``).

Layout under the root URI::

    tables/<table>/part-<time>-<uuid>.parquet   rows added by a step (immutable once written)
    tables/<table>/<name>.parquet                one keyed file that a step replaces whole
    tables/<table>/schema-<hash>.parquet         zero rows: the table's schema, so views always bind
                                                 (one per schema version: a column added later binds
                                                 on a lake written before it)
    blobs/<sha256[:2]>/<sha256>.<ext>            content-addressed image bytes
    svcluster.sql                                views for the plain ``duckdb`` CLI (local lakes):
                                                 ``cd LAKE && duckdb -init svcluster.sql``; the
                                                 root is the folder DuckDB runs in, so a copied or
                                                 moved lake opens as itself

A lake is opened in one of three ways (``open_lake(uri, mode=...)``): ``create`` makes it if
it is not there (the commands that bring a map in: ingest, run, demo); ``write`` needs it to
exist and brings its schema files up to date (fetch, embed, cluster, ...); ``read`` needs it to
exist and writes nothing at all, so a lake the user cannot write still answers (runs, sql,
compare, export, report). A place with no ``tables/`` folder holds no lake: a mistyped
``--lake`` is an error for the commands that do not create one, never a new empty lake.

Every file appears atomically: locally it is written under ``_tmp/`` and renamed into place;
on S3 a PUT is atomic. Readers therefore never see a half-written file, and a process killed
mid-write leaves at most a stray file under ``_tmp/`` that the next open removes.
DuckDB reads the tables through the views in ``sql/lake/views.sql``, which keep the latest row per
key, so writing the same rows twice never duplicates them.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from svcluster.sql import catalog_sql
from svcluster.tasks.errors import LakeError, NoLakeError, ReadOnlyLakeError
from svcluster.tasks.files import atomic_write
from svcluster.tasks.lake.schemas import TABLES, TableSpec

TMP_DIR = "_tmp"
INIT_FILE = "svcluster.sql"  # the views for the plain duckdb CLI, at a local lake's root
LakeMode = Literal["create", "write", "read"]


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What storage raises when it cannot be reached: OSError, and botocore's own errors
    (an unreachable S3 endpoint is ``EndpointConnectionError``, not an OSError)."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - s3fs not installed
        return (OSError,)
    return (OSError, BotoCoreError)


STORAGE_ERRORS = _storage_errors()


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _not_writable(exc: BaseException) -> bool:
    """Whether a storage error says the lake may not be written here (permissions, a
    read-only filesystem, an immutable folder, S3's AccessDenied), rather than a fault."""
    return isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS)

STALE_TMP_SECONDS = 3600


def normalise_uri(uri: str) -> str:
    """A lake URI as stored and compared: absolute for folders, without a trailing slash."""
    if "://" in uri and not uri.startswith("file://"):
        return uri.rstrip("/")
    path = uri.removeprefix("file://")
    return str(Path(path).expanduser().resolve())


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# The lakes' view databases in this process (see Lake.connect), by root, filesystem and pid;
# the least recently used go first beyond a few (open cursors keep theirs alive until closed).
Connection = duckdb.DuckDBPyConnection  # what ``Lake.connect`` returns; other modules name it by this

_DATABASES: OrderedDict[tuple[str, Any, int], Connection] = OrderedDict()
_DATABASES_KEPT = 8
_DATABASES_LOCK = threading.Lock()


class Lake:
    """A lake at a root URI. Cheap to create; ``open_lake`` also makes sure its tables exist."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None):
        self.uri = normalise_uri(uri)
        options = dict(storage_options or {})
        if self.uri.startswith(("s3://", "s3a://")):
            # Other processes add files to the lake: never answer a listing from a stale cache.
            options.setdefault("use_listings_cache", False)
        self.fs, self.root = fsspec.core.url_to_fs(self.uri, **options)
        self.is_local = self.fs.protocol in ("file", "local") or "file" in tuple(self.fs.protocol)
        # Where DuckDB finds the tables: the root, or (a lake opened for reading that lacks some
        # of this version's schema files) a private folder of links to it (see prepare_read).
        self._view_root: str | None = None

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

    @property
    def duckdb_root(self) -> str:
        """The ``lake_root`` this lake's views read: the root, unless reading needs the links
        of ``prepare_read``."""
        return self._view_root or self.root_url

    # ---- set-up ----------------------------------------------------------------------------
    def is_lake(self) -> bool:
        """Whether a lake is here: its ``tables/`` folder exists (a missing or empty folder, a
        file, or a bucket prefix with nothing of svcluster's is not a lake)."""
        try:
            if self.is_local:
                return os.path.isdir(self.path("tables"))
            return bool(self.fs.isdir(self.path("tables")))
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot reach the lake at {self.uri}: {_reason(exc)}") from None

    def require(self) -> "Lake":
        """This lake, or NoLakeError when there is none at its root (nothing is created)."""
        if not self.is_lake():
            raise NoLakeError(
                f"no lake at {self.uri} (`svcluster ingest MAP.json` creates one; --lake or SVCLUSTER_LAKE names another)"
            )
        return self

    def ensure(self) -> "Lake":
        """Create missing table folders with their zero-row schema files; drop stale temp files.
        Writes nothing when all is in place (so a read-only lake passes when it is complete)."""
        try:
            for t in TABLES.values():
                schema_file = schema_file_name(t)
                if not self.exists(schema_file):
                    self.write_bytes(schema_file, parquet_bytes(t.schema.empty_table()))
            self._remove_stale_tmp()
            catalog = self.duckdb_catalog_sql(relocatable=True).encode()
            if self.is_local and not (self.exists(INIT_FILE) and self.read_bytes(INIT_FILE) == catalog):
                self.write_bytes(INIT_FILE, catalog)  # only when changed (an older lake's pinned an absolute path)
        except STORAGE_ERRORS as exc:
            raise LakeError(f"cannot prepare the lake at {self.uri}: {_reason(exc)}") from None
        return self

    def prepare_read(self) -> "Lake":
        """Ready the lake for reading without writing anything to it (the lake must exist).

        A lake written by an older svcluster may lack a schema file of this version (a table
        added since, or new columns): writing commands add it, but a reading one must not, and
        may not be able to. Locally the views then read a private temporary folder instead:
        links to the lake's table folders, and for each table lacking its schema file a folder
        of links to its files plus the schema file (what that table held at open). On S3 a
        table with no file at all cannot be read that way: the error says how to upgrade."""
        self.require()
        missing = [t for t in TABLES.values() if not self.exists(schema_file_name(t))]
        if not missing:
            return self
        if self.is_local:
            self._view_root = self._linked_view_root(missing)
            return self
        empty = [t.name for t in missing if not self.table_files(t.name)]
        if empty:
            raise LakeError(
                f"the lake at {self.uri} was written by an older svcluster and has no {', '.join(empty)} table yet: "
                "run a command that writes (e.g. svcluster fetch or cluster) on it once with write access"
            )
        return self

    def _linked_view_root(self, missing: Sequence[TableSpec]) -> str:
        lacking = {t.name for t in missing}
        shadow = Path(tempfile.mkdtemp(prefix="svcluster-lake-"))
        atexit.register(shutil.rmtree, shadow, True)
        for t in TABLES.values():
            real = Path(self.path(f"tables/{t.name}"))
            linked = shadow / "tables" / t.name
            linked.parent.mkdir(parents=True, exist_ok=True)
            if t.name not in lacking:
                linked.symlink_to(real, target_is_directory=True)
                continue
            linked.mkdir()
            for rel in self.table_files(t.name):
                (linked / Path(rel).name).symlink_to(self.path(rel))
            (linked / Path(schema_file_name(t)).name).write_bytes(parquet_bytes(t.schema.empty_table()))
        return str(shadow)

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
    def append(self, table: str, rows: pa.Table) -> str | None:
        """Add rows to a table as one new immutable Parquet file. Returns its lake path."""
        if rows.num_rows == 0:
            return None
        rel = f"tables/{spec(table).name}/part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        self.write_bytes(rel, parquet_bytes(conform(spec(table), rows)))
        return rel

    def replace(self, table: str, name: str, rows: pa.Table) -> str:
        """Write (or atomically overwrite) the table's keyed file ``name``."""
        rel = f"tables/{spec(table).name}/{keyed_file_name(name)}"
        self.write_bytes(rel, parquet_bytes(conform(spec(table), rows)))
        return rel

    def table_files(self, table: str) -> list[str]:
        return [p for p in self.list(f"tables/{spec(table).name}") if p.endswith(".parquet")]

    def compact(self, table: str) -> int:
        """Rewrite a table's part files as one file of its latest rows; returns files removed.

        Rows keep their own ``written_at``, so a row another process appends meanwhile still
        wins over what the compacted file holds. Safe while readers run: the compacted file
        lands before the old parts go, and the views' latest-row-per-key rule hides the overlap.
        """
        table_spec = spec(table)
        parts = [p for p in self.table_files(table) if "/part-" in p]
        if len(parts) < 2:
            return 0
        try:
            rows = pa.concat_tables(
                [pq.read_table(io.BytesIO(self.read_bytes(p))) for p in parts], promote_options="permissive"
            )
        except pa.ArrowInvalid as exc:
            raise LakeError(f"cannot compact {table}: its parts do not share a schema ({exc})") from None
        self.append(table, latest_per_key(rows, table_spec.key))
        for p in parts:
            self.delete(p)
        return len(parts)

    # ---- DuckDB ----------------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the lake's views (``sql/lake/views.sql``); close it when done.

        The views are defined once per lake and process in an in-memory database (binding them
        reads every table's schema: a request per table on S3; docs/lake.md, 'Speed'), shared by every Lake
        object of the same root and filesystem, and each call returns a new cursor on it. A
        view is re-planned on every query, so new files are always seen; DuckDB's file cache is
        off because keyed files are replaced under the same name.
        """
        key = (self.duckdb_root, getattr(self.fs, "_fs_token", id(self.fs)), os.getpid())  # a forked child opens its own
        with _DATABASES_LOCK:
            db = _DATABASES.get(key)
            if db is None:
                db = _DATABASES[key] = self._open_database()
                while len(_DATABASES) > _DATABASES_KEPT:
                    _DATABASES.popitem(last=False)
            _DATABASES.move_to_end(key)
            con = db.cursor()
        con.execute("SET VARIABLE lake_root = ?", [self.duckdb_root])
        return con

    def _open_database(self) -> duckdb.DuckDBPyConnection:
        db = duckdb.connect()
        db.execute("SET enable_external_file_cache = false")
        if not self.is_local:
            db.register_filesystem(self.fs)
        db.execute("SET VARIABLE lake_root = ?", [self.duckdb_root])
        try:
            db.execute(catalog_sql())
        except duckdb.Error as exc:
            db.close()
            raise LakeError(f"cannot open the lake at {self.uri}: {exc}") from None
        return db

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run one SQL statement against the lake's views; the result as an Arrow table."""
        with self.connect() as con:
            return con.sql(sql, params=params).to_arrow_table()

    def query_script(self, script: str) -> tuple[pa.Table | None, int]:
        """Run every statement of a user's SQL script in order, on one connection to the views
        (what the script creates lives in this process only; the lake is not written), and
        return the last statement's result (None if it has none) and how many statements
        ran: 0 when the script holds nothing but blanks, comments and semicolons."""
        with self.connect() as con:
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
        with self.connect() as con:
            reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
            yield from reader

    def duckdb_catalog_sql(self, relocatable: bool = False) -> str:
        """SQL that gives the plain ``duckdb`` CLI the same views: ``duckdb -init svcluster.sql``.

        It names the lake by its absolute root (``svcluster sql --catalog``: use it from
        anywhere, for this lake where it is now). ``relocatable`` (a local lake's own
        ``svcluster.sql``): the root is the folder DuckDB runs in, checked to hold this file,
        so the file pins no path and a copied or moved lake opens as itself.
        For an S3 lake it first loads ``httpfs`` and asks DuckDB for an S3 secret from the
        usual AWS credential chain (environment, ~/.aws); it never contains a credential; its
        root is its URI either way.
        """
        if self.is_local and relocatable:
            return (
                f"-- Generated by svcluster: the lake's views for the duckdb CLI. Run it in the lake folder:\n"
                f"--   cd LAKE && duckdb -init {INIT_FILE}\n"
                "-- The lake is the folder DuckDB runs in (no path is pinned: a copied or moved lake opens as\n"
                "-- itself). From elsewhere: svcluster --lake LAKE sql --catalog > lake.sql; duckdb -init lake.sql\n"
                "SET VARIABLE lake_root = (SELECT CASE WHEN count(*) = 0 THEN error("
                f"'svcluster.sql: run duckdb in the lake folder (cd LAKE && duckdb -init {INIT_FILE})') "
                f"ELSE '.' END FROM glob('{INIT_FILE}'));\n" + catalog_sql()
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
        return head + f"SET VARIABLE lake_root = '{root}';\n" + catalog_sql()


def schema_file_name(table: TableSpec) -> str:
    """The zero-row file that gives ``table``'s current columns to the views, named by a hash of
    its schema so that a lake written by an older version gains the new columns (as nulls)."""
    digest = hashlib.sha256(str(table.schema).encode("utf-8")).hexdigest()[:12]
    return f"tables/{table.name}/schema-{digest}.parquet"


def spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise LakeError(f"unknown lake table {table!r}; tables: {', '.join(TABLES)}") from None


def latest_per_key(rows: pa.Table, key: Sequence[str]) -> pa.Table:
    """The row with the latest ``written_at`` for each key (what the views show)."""
    ranked = rows.take(pc.sort_indices(rows, [("written_at", "descending")]))
    ranked = ranked.append_column("__rank", pa.array(range(ranked.num_rows), pa.int64()))
    first = ranked.group_by(list(key), use_threads=False).aggregate([("__rank", "min")])
    return ranked.take(first.column("__rank_min")).drop_columns(["__rank"])


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


def open_lake(uri: str, storage_options: Mapping[str, Any] | None = None, *, mode: LakeMode = "create") -> Lake:
    """Open the lake at ``uri``. ``create`` (the default): initialise it if it is not there;
    ``write``: NoLakeError if it is not there, else bring its schema files up to date;
    ``read``: NoLakeError if it is not there, and write nothing (see ``Lake.prepare_read``)."""
    lake = Lake(uri, storage_options)
    if mode == "create":
        return lake.ensure()
    if mode == "write":
        return lake.require().ensure()
    if mode == "read":
        return lake.prepare_read()
    raise ValueError(f"open_lake: mode must be create, write or read, not {mode!r}")
