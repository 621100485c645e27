"""Embedding vectors of one map, read from the lake into one float32 matrix.

The ``embeddings`` table (a Delta table) holds one row per (location, model, pooling, precision);
a re-embedding replaces it. The read happens in two passes on one DuckDB connection, over the
Parquet files of the table's version the connection reads (``lake_files``): first the *keys*
(file, row number, location) of the map's rows, then only those rows' vectors, joined by file and
row number and copied batch by batch straight into a preallocated numpy matrix (no per-row Python).

Rows of the matrix are in a canonical order, the locations sorted by ``location_id``, so the
same embeddings always give the same matrix whatever order the files were written in.

Decoding Parquet lists costs far more than the bytes they hold (every float carries list
levels), and users cluster the same embeddings many times (k=5, k=18, a sweep, with PCA or
not). So the first read also leaves the matrix as raw float32 bytes in the lake under
``cache/vectors/<fingerprint>.f32``; later reads of the very same rows (same fingerprint) read
that file instead, at the speed of ``np.load``. The fingerprint names exact rows, so a cached
matrix is never stale; deleting ``cache/`` only costs one slower read, and ``svcluster lake
vacuum`` deletes the matrices of no current embedding set (``prune_vector_cache``).
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from svcluster.sql import load_sql
from svcluster.tasks.errors import LakeError, NotFoundError, ReadOnlyLakeError
from svcluster.tasks.lake.store import Connection, Lake
from svcluster.tasks.progress import NullProgress, Progress

BATCH_ROWS = 16_384


@dataclass(frozen=True)
class EmbeddingChoice:
    """A kind of embedding that exists for a map, and how many of its locations have one."""

    model: str
    pooling: str
    precision: str
    locations: int
    dim: int
    map_locations: int

    @property
    def label(self) -> str:
        return f"{self.model} / {self.pooling} / {self.precision}"


@dataclass(frozen=True)
class EmbeddingSet:
    """The exact embedding rows a clustering reads (before their vectors are loaded).

    ``fingerprint`` identifies those rows: every row is immutable and a re-embedded location gets
    a newer row, so the same fingerprint means the very same vectors.
    """

    map: str
    model: str
    pooling: str
    precision: str
    count: int
    dim: int
    fingerprint: str
    keys: pa.Table = field(repr=False, compare=False)  # the rows, sorted by location_id


@dataclass
class Vectors:
    """Embeddings as a matrix: row ``i`` of ``matrix`` (float32, n x d) is ``location_ids[i]``."""

    location_ids: np.ndarray  # str objects, sorted
    matrix: np.ndarray
    fingerprint: str = ""


def embedding_choices(con: Connection, map_name: str) -> list[EmbeddingChoice]:
    """Every (model, pooling, precision) with embeddings for locations of ``map_name``.

    ``con`` is a lake connection (``Lake.connect()``)."""
    rows = con.sql(load_sql("cluster/embedding_choices"), params={"map": map_name}).to_arrow_table().to_pylist()
    return [EmbeddingChoice(**r) for r in rows]


def embedding_files(con: Connection) -> list[str]:
    """The Parquet files of the embeddings table's version this connection reads."""
    return [r[0] for r in con.sql("SELECT uri FROM lake_files WHERE table_name = 'embeddings' ORDER BY uri").fetchall()]


def _select(con: Connection, map_name: str, model: str, pooling: str, precision: str) -> EmbeddingSet:
    files = embedding_files(con)
    params = {"map": map_name, "model": model, "pooling": pooling, "precision": precision, "files": files}
    if files:
        keys = latest_rows(con.sql(load_sql("cluster/embedding_keys"), params=params).to_arrow_table())
    else:
        keys = pa.table({"location_id": pa.array([], pa.string())})
    if keys.num_rows == 0:
        raise NotFoundError(
            f"no embeddings {model} / {pooling} / {precision} for map {map_name!r} (run `svcluster embed --map {map_name}`)"
        )
    dims = pc.unique(keys.column("dim")).to_pylist()
    if len(dims) != 1 or dims[0] is None:
        raise LakeError(f"embeddings {model} / {pooling} / {precision} of map {map_name!r} mix vector sizes {dims}")
    fingerprint = fingerprint_keys(keys, (model, pooling, precision))
    return EmbeddingSet(map_name, model, pooling, precision, keys.num_rows, int(dims[0]), fingerprint, keys)


def latest_rows(keys: pa.Table) -> pa.Table:
    """One row per location of ``keys`` (sorted by location): its latest (largest written_us)."""
    lid = keys.column("location_id").combine_chunks()
    if len(lid) < 2 or not pc.any(pc.equal(lid.slice(1), lid.slice(0, len(lid) - 1))).as_py():
        return keys
    keys = keys.take(pc.sort_indices(keys, sort_keys=[("location_id", "ascending"), ("written_us", "descending")]))
    lid = keys.column("location_id").combine_chunks()
    return keys.filter(pa.concat_arrays([pa.array([True]), pc.not_equal(lid.slice(1), lid.slice(0, len(lid) - 1))]))


def fingerprint_keys(keys: pa.Table, kind: tuple[str, str, str]) -> str:
    """A hash of the selected rows' identities: (model, pooling, precision), and per row its
    location, write time and size (hashed from the Arrow buffers, in order). Rows are immutable
    and every write has its own time, so these name the exact vectors."""
    h = hashlib.sha256("\x1e".join(kind).encode("utf-8"))
    for name in ("location_id", "written_us", "dim"):
        col = keys.column(name).combine_chunks()
        h.update(name.encode())
        if not pa.types.is_integer(col.type):
            col = col.cast(pa.string())
            offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
            h.update((offsets - offsets[0]).astype("<i4").tobytes())
            h.update(memoryview(col.buffers()[2])[offsets[0] : offsets[-1]])
        else:
            h.update(col.to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    return h.hexdigest()


def embedding_set(con: Connection, map_name: str, model: str, pooling: str, precision: str) -> EmbeddingSet:
    """Which rows ``load_vectors`` would read, and their fingerprint (cheap: no vectors read)."""
    return _select(con, map_name, model, pooling, precision)


def cache_path(fingerprint: str) -> str:
    """Where the matrix of one fingerprint is kept (raw float32, row-major)."""
    return f"cache/vectors/{fingerprint}.f32"


def load_vectors(
    lake: Lake,
    map_name: str,
    model: str,
    pooling: str,
    precision: str,
    progress: Progress | None = None,
    con: Connection | None = None,
    cache: bool = True,
) -> Vectors:
    """The latest embedding of every location of ``map_name`` that has one, as a matrix.

    ``con``: an open connection of ``lake`` to use (else one is opened for the read).
    ``cache``: read and keep the matrix cache (see the module docstring)."""
    progress = progress or NullProgress()
    with lake.connect() if con is None else nullcontext(con) as c:
        chosen = _select(c, map_name, model, pooling, precision)
        return load_selected(lake, c, chosen, progress, cache)


def load_selected(
    lake: Lake, con: Connection, chosen: EmbeddingSet, progress: Progress, cache: bool = True
) -> Vectors:
    """The vectors of the rows ``embedding_set`` selected (see ``load_vectors``)."""
    n, d = chosen.count, chosen.dim
    cached = cache_path(chosen.fingerprint)
    matrix = np.empty((n, d), dtype=np.float32)
    if not (cache and lake.exists(cached) and lake.read_into(cached, memoryview(matrix).cast("B")) == matrix.nbytes):
        matrix = read_matrix(con, chosen, progress)
        if cache:
            try:
                lake.write_bytes(cached, memoryview(matrix).cast("B"))  # no copy of the matrix
            except ReadOnlyLakeError:  # a lake the user cannot write still answers (search, similar)
                pass
    ids = chosen.keys.column("location_id").to_numpy(zero_copy_only=False).astype(object, copy=False)
    return Vectors(ids, matrix, chosen.fingerprint)


def read_matrix(con: Connection, chosen: EmbeddingSet, progress: Progress) -> np.ndarray:
    """The selected rows' vectors decoded from Parquet (joined by file and row number)."""
    map_name, n, d = chosen.map, chosen.count, chosen.dim
    names = dict(con.sql(load_sql("cluster/embedding_file_names"), params={"files": embedding_files(con)}).fetchall())
    file_index = chosen.keys.column("file_index").to_numpy(zero_copy_only=False)
    selected = pa.table(
        {
            "pos": pa.array(np.arange(n, dtype=np.int64)),
            "location_id": chosen.keys.column("location_id"),
            "filename": pa.array([names[i] for i in np.unique(file_index)], pa.string()).take(
                pa.array(np.searchsorted(np.unique(file_index), file_index))
            ),
            "file_row_number": chosen.keys.column("file_row_number"),
        }
    )
    con.register("selected_embeddings", selected)
    files = [r[0] for r in con.sql(load_sql("cluster/embedding_files")).fetchall()]
    matrix = np.empty((n, d), dtype=np.float32)
    filled = np.zeros(n, dtype=bool)
    progress.start(n, "loading vectors")
    reader = con.sql(load_sql("cluster/embedding_vectors"), params={"files": files}).to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        pos = batch.column(0).to_numpy()
        vec = batch.column(1)
        flat = vec.flatten()
        if vec.null_count or len(flat) != len(vec) * d:
            raise LakeError(f"embeddings of map {map_name!r} hold a null vector or one not of size {d}")
        block = flat.to_numpy(zero_copy_only=False).reshape(len(vec), d)
        if len(pos) and np.all(np.diff(pos) == 1):
            matrix[pos[0] : pos[0] + len(pos)] = block
        else:
            matrix[pos] = block
        filled[pos] = True
        progress.advance(len(pos))
    progress.finish()
    con.unregister("selected_embeddings")
    if not filled.all():
        raise LakeError(
            f"{int((~filled).sum())} embedding rows of map {map_name!r} could not be read back "
            "(the embeddings changed while they were read); run the request again"
        )
    return matrix


def prune_vector_cache(lake: Lake) -> int:
    """Delete the cached matrices (``cache/vectors/*.f32``) of no current embedding set: made of
    embeddings since replaced or removed, they would never be read again. Returns how many."""
    cached = [p for p in lake.list("cache/vectors") if p.endswith(".f32")]
    if not cached:
        return 0
    keep: set[str] = set()
    with lake.connect() as con:
        for (map_name,) in con.sql(load_sql("cluster/map_names")).fetchall():
            for c in embedding_choices(con, map_name):
                try:
                    keep.add(embedding_set(con, map_name, c.model, c.pooling, c.precision).fingerprint)
                except (NotFoundError, LakeError):
                    continue
    stale = [p for p in cached if p.rsplit("/", 1)[-1].removesuffix(".f32") not in keep]
    for p in stale:
        lake.delete(p)
    return len(stale)
