"""How DuckDB reads an S3 lake's table files: with what a data file never changes remembered, in
memory and on this machine's disk, and through delta-rs's object store for the rest.

Delta data files (``tables/<table>/part-*.parquet``) and the schema files beside them are written
once under a unique name and never changed. DuckDB asks for a file's details several times while
it plans and scans (each a HEAD request to S3), and reads its footer (the Parquet
metadata at its end) to plan, and again to scan. This filesystem:

- answers every ask for a table file's details from what the table's Delta log says of it (its
  size and time, which the lake's ``DeltaTables`` learn as they read the log or a remembered
  snapshot), else after the first ask from memory, and from the disk cache
  (``<machine cache>/s3-files/``) in a later process;
- reads a small file (``SMALL_FILE_BYTES``: a small table's, or a batch of a few rows) whole, in
  one request where a footer and a column would take two or more, and keeps it in that disk
  cache: a later process reads it there;
- of a larger file keeps the end in that disk cache: ``end_guess`` bytes (twice what DuckDB
  reads of the end when it opens the file, from ``TAIL_GUESS`` up to ``TAIL_MAX``), or the whole
  footer if longer, or all DuckDB reads of the end at once if more, so a later process plans a
  query over it (and answers a ``count(*)``, for which DuckDB reads nothing but that end)
  without a request; its other bytes are read by ranged GETs through delta-rs
  (``s3_objects.py``: with the size known, no HEAD, and no interpreter lock held while it
  waits, so DuckDB's threads read at once), each from where DuckDB asks on to ``READ_AHEAD``
  bytes (DuckDB asks a column chunk in pieces of up to 2 MiB) but never past the end of the
  column chunk asked (the footer says where each ends: a query of small columns does not read
  the vectors beside them); the blocks read last are kept for every handle of the file (up to
  ``BLOCK_BYTES``), as DuckDB opens a file once per thread, and a read under way serves every
  handle that wants bytes inside it, while reads of other bytes of the file go on at once;
- reads the ends not kept yet of the files a view is bound over at once (``learn_ends``,
  ``PARALLEL_ENDS`` at a time), where DuckDB reads them one after another as it binds the view;
- keeps what it has of the files read last (a small file, a large one's end) in memory too, up
  to ``KEPT_BYTES``, so DuckDB's second open of a file reads neither disk nor network;
- imports s3fs only for a table file no log told it of (its details), for listings and writes:
  a reader of the lake's views never pays for the import (about half a second, docs/lake.md).

The disk cache holds nothing but what the lake's own files say (sizes, dates, footers; no
credential), keyed by endpoint and path, and stays under ``DISK_BYTES`` (the oldest go).
Listings, the Delta log and blobs are never cached here (other processes add to them).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import io
import json
import os
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fsspec

from svcluster.tasks.files import atomic_write
from svcluster.tasks.files import cache_dir
from svcluster.tasks.lake.s3_objects import S3Objects

SMALL_FILE_BYTES = 1024 * 1024  # a table file up to this size is read whole, in one request
KEPT_BYTES = 256 * 1024 * 1024  # what is kept of the files read last (small ones whole), in memory
TAIL_GUESS = 64 * 1024  # the least kept of a large file's end (more if its footer is longer)
TAIL_MAX = 1024 * 1024  # the most kept of a large file's end, when DuckDB reads that much of it at once
READ_AHEAD = 16 * 1024 * 1024  # a read of a large file's other bytes reads on to this many (DuckDB reads on)
BLOCK_BYTES = 64 * 1024 * 1024  # the blocks read ahead last, kept for every handle of their file
PARALLEL_ENDS = 8  # the most files whose ends are read at once, before DuckDB binds a view over them
DISK_BYTES = 256 * 1024 * 1024  # the disk cache is trimmed to half of this when it grows past it
_INFO_KEYS = ("name", "size", "type", "ETag", "LastModified")
_IMMUTABLE = re.compile(r"/tables/[^/]+/(part-[^/]+|_svcluster_schema-[0-9a-f]+)\.parquet$")


def is_immutable(path: str) -> bool:
    """Whether ``path`` is a table file written once under a unique name."""
    return bool(_IMMUTABLE.search(path))


def s3_endpoint(options: Mapping[str, Any]) -> str | None:
    """The S3 endpoint fsspec options name, else the environment's (None: AWS itself)."""
    client = dict(options.get("client_kwargs") or {})
    endpoint = client.get("endpoint_url") or options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
    return str(endpoint) if endpoint else None


def footer_length(tail: bytes) -> int | None:
    """The bytes a Parquet file's footer takes at its end (metadata, its length, ``PAR1``), from
    at least its last 8 bytes; None when they are not a Parquet ending."""
    if len(tail) < 8 or tail[-4:] != b"PAR1":
        return None
    return int.from_bytes(tail[-8:-4], "little") + 8


def end_guess(size: int) -> int:
    """How much of a large file's end is read first: twice what DuckDB 2.0.1 reads when it opens
    the file (about 1/512 of it, 16 KiB at least), so that read is inside, but at least
    ``TAIL_GUESS`` and at most ``TAIL_MAX``."""
    return min(TAIL_MAX, max(TAIL_GUESS, size // 256))


def chunk_ends(tail: bytes) -> list[int]:
    """Where each column chunk of a Parquet file ends (sorted offsets), from its end as kept (at
    least the whole footer, whose offsets are the file's); empty when that is not a footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    length = footer_length(tail)
    if length is None or length > len(tail):
        return []
    try:
        meta = pq.read_metadata(pa.BufferReader(tail[-length:]))
    except (OSError, pa.ArrowException):
        return []
    ends = set()
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            first = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset:
                first = min(first, column.dictionary_page_offset)
            ends.add(first + column.total_compressed_size)
    return sorted(ends)


def _whole_end(tail: bytes | None, size: int) -> bytes | None:
    """``tail`` if it can be the end of a file of ``size`` bytes as kept (the whole file when
    small, else at least the whole footer), else None: a damaged cache entry is read around."""
    if tail is None or len(tail) > size or (size <= SMALL_FILE_BYTES and len(tail) != size):
        return None
    length = footer_length(tail)
    return tail if length is not None and length <= len(tail) else None


class DiskCache:
    """What was read of immutable table files, kept on this machine: per file its details (JSON)
    and its footer (bytes), in one folder; a file that cannot be read or written is skipped (the
    cache only saves requests)."""

    def __init__(self, folder: Path, scope: str):
        self.folder = folder
        self.scope = scope  # the endpoint: one bucket name on two servers are two lakes

    def _stem(self, key: str) -> Path:
        digest = hashlib.sha256(f"{self.scope}\n{key}".encode("utf-8")).hexdigest()[:32]
        return self.folder / digest[:2] / digest

    def info(self, key: str) -> dict[str, Any] | None:
        try:
            out = json.loads(self._stem(key).with_suffix(".json").read_text())
            if out.get("name") != key:
                return None
            if out.get("LastModified"):
                out["LastModified"] = datetime.fromisoformat(out["LastModified"])
            return out
        except (OSError, ValueError):
            return None

    def put_info(self, key: str, info: dict[str, Any]) -> None:
        kept = {k: info[k] for k in _INFO_KEYS if k in info}
        kept["name"] = key
        if isinstance(kept.get("LastModified"), datetime):
            kept["LastModified"] = kept["LastModified"].isoformat()
        self._write(self._stem(key).with_suffix(".json"), json.dumps(kept).encode("utf-8"))

    def tail(self, key: str) -> bytes | None:
        try:
            return self._stem(key).with_suffix(".tail").read_bytes()
        except OSError:
            return None

    def put_tail(self, key: str, tail: bytes) -> None:
        self._write(self._stem(key).with_suffix(".tail"), tail)

    def _write(self, path: Path, data: bytes) -> None:
        try:
            with atomic_write(path) as fh:
                fh.write(data)
        except OSError:
            return
        if random.random() < 1 / 256:
            self.trim()

    def trim(self, limit: int = DISK_BYTES) -> None:
        """Remove the oldest entries until the cache is under half of ``limit``, if it is over it."""
        try:
            entries = [(e, e.stat()) for d in self.folder.iterdir() if d.is_dir() for e in d.iterdir()]
        except OSError:
            return
        total = sum(st.st_size for _, st in entries)
        if total <= limit:
            return
        for path, st in sorted(entries, key=lambda e: e[1].st_mtime):
            size = st.st_size
            if total <= limit // 2:
                break
            try:
                path.unlink()
                total -= size
            except OSError:
                pass


class TableFile(io.RawIOBase):
    """A table file opened for DuckDB: a small one's bytes and a large one's end come from the
    disk cache (read and kept there the first time); a large one's other bytes from ranged GETs."""

    def __init__(self, fs: Any, key: str, size: int):
        super().__init__()
        self.fs, self.key, self.size, self.pos = fs, key, size, 0
        self._tail: bytes | None = _whole_end(fs.tail(key), size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        start = min(self.pos, end)
        data = self._read_range(start, end)
        self.pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _read_range(self, start: int, end: int) -> bytes:
        if start >= end:
            return b""
        if self._tail is None and (self.size <= SMALL_FILE_BYTES or end == self.size):
            self._learn_tail()  # a small file whole (DuckDB reads it whole), or a large one's end
        tail_start = self.size - len(self._tail or b"")
        if self._tail is not None and start < tail_start and end == self.size and self.size - start <= TAIL_MAX:
            self._extend_tail(start, tail_start)  # DuckDB read more of the end than is kept
            tail_start = start
        if self._tail is not None and start >= tail_start:
            return self._tail[start - tail_start : end - tail_start]
        # on to the end of the column chunk being read (not into another, nor into the end kept)
        stop = max(end, min(tail_start, start + READ_AHEAD, self._chunk_end(start)))
        block_start, block = self.fs.block(self.key, start, end, stop, self.size)
        return block[start - block_start : end - block_start]

    def _chunk_end(self, offset: int) -> int:
        """Where the column chunk holding ``offset`` ends (the file's size when the footer is
        not known)."""
        ends = self.fs.chunk_ends(self.key, self._tail) if self._tail is not None else []
        at = bisect.bisect_right(ends, offset)
        return ends[at] if at < len(ends) else self.size

    def _learn_tail(self) -> None:
        self._tail = self.fs.read_end(self.key, self.size)

    def _extend_tail(self, start: int, tail_start: int) -> None:
        """Read the bytes from ``start`` up to what is kept of the end, and keep them with it."""
        self._keep_tail(self.fs.cat_file(self.key, start=start, end=tail_start) + (self._tail or b""))

    def _keep_tail(self, data: bytes) -> None:
        self._tail = data
        self.fs.keep_tail(self.key, data)


class TableFiles(fsspec.AbstractFileSystem):
    """The ``s3://`` filesystem DuckDB reads an S3 lake's files through: a table file's details
    come from its table's log (else memory, the disk cache or a HEAD), what is kept of it from
    memory or the disk cache, its other bytes from ranged GETs through delta-rs; any other object
    (listings, writes) from s3fs, made on first use, so a reader of table files never imports it."""

    protocol = ("s3", "s3a")
    cachable = False  # one per view database (fsspec would hand back one made for other options)

    def __init__(self, storage_options: Mapping[str, Any], details: Mapping[str, tuple[int, int]], objects: S3Objects):
        super().__init__()
        self.options = {**storage_options, "skip_instance_cache": True}
        self.details = details  # a data file's ``bucket/key``: (size, time in ms), from the tables' logs
        self.objects = objects
        self.immutable_infos: dict[str, dict[str, Any]] = {}
        self.kept: OrderedDict[str, bytes] = OrderedDict()
        self.kept_total = 0
        self.kept_lock = threading.Lock()
        self.disk = DiskCache(cache_dir() / "s3-files", s3_endpoint(storage_options) or "aws")
        self.blocks: OrderedDict[tuple[str, int], bytes] = OrderedDict()  # (key, start): bytes read ahead
        self.blocks_total = 0
        self.reading: dict[tuple[str, int, int], threading.Event] = {}  # (key, start, stop) of reads under way
        self.blocks_lock = threading.Lock()
        self.ends: dict[str, list[int]] = {}  # per table file: where its column chunks end

    @functools.cached_property
    def s3(self) -> Any:
        import s3fs  # only a read the caches cannot answer needs it

        return s3fs.S3FileSystem(**self.options)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        key = self._strip_protocol(path)
        known = self.immutable_infos.get(key)
        if known is None and is_immutable(key):
            detail = self.details.get(key)
            if detail is not None:  # what the log says: the same in every process
                known = {"name": key, "size": detail[0], "type": "file",
                         "LastModified": datetime.fromtimestamp(detail[1] / 1000, timezone.utc)}
            else:
                known = self.disk.info(key)
            if known is not None:
                self.immutable_infos[key] = known
        if known is not None:
            return dict(known)
        out = self.s3.info(path, **kwargs)
        if out.get("type") == "file" and is_immutable(key):
            self.immutable_infos[key] = dict(out)
            self.disk.put_info(key, out)
        return out

    def modified(self, path: str) -> datetime:
        return self.info(path)["LastModified"]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        key = self._strip_protocol(path)
        if mode != "rb" or not is_immutable(key):
            return self.s3._open(path, mode=mode, **kwargs)
        return TableFile(self, key, int(self.info(key)["size"]))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        key = self._strip_protocol(path)
        if not is_immutable(key):
            return self.s3.cat_file(path, start=start, end=end, **kwargs)
        size = int(self.info(key)["size"])
        begin = 0 if start is None else (start if start >= 0 else max(0, size + start))
        stop = size if end is None else (min(end, size) if end >= 0 else max(0, size + end))
        return self.read_range(key, begin, stop, size)

    def read_range(self, key: str, start: int, end: int, size: int) -> bytes:
        """Bytes ``[start, end)`` of a table file of ``size`` bytes: one ranged GET through
        delta-rs (``s3_objects.py``), which waits without the interpreter lock."""
        return self.objects.read_range(key, start, end, size) if start < end else b""

    def read_end(self, key: str, size: int) -> bytes:
        """Read what the machine cache keeps of a table file (a small file whole, else its last
        ``end_guess`` bytes, or its whole footer if longer) and keep it there."""
        if size <= SMALL_FILE_BYTES:
            data = self.read_range(key, 0, size, size)
        else:
            data = self.read_range(key, size - end_guess(size), size, size)
            length = footer_length(data)
            if length is not None and length > len(data):
                data = self.read_range(key, max(0, size - length), size - len(data), size) + data
        self.keep_tail(key, data)
        return data

    def learn_ends(self, uris: Iterable[str]) -> None:
        """Read at once the ends of those of these table files (``s3://`` URIs from a table's log)
        whose end is not kept yet: DuckDB reads them one after another when it binds a view over
        the files. After a read that fails, none is begun: DuckDB's own reads report it."""
        todo = []
        for uri in uris:
            key = self._strip_protocol(uri)
            detail = self.details.get(key)
            if detail is not None and is_immutable(key) and _whole_end(self.tail(key), detail[0]) is None:
                todo.append((key, detail[0]))
        if len(todo) < 2:
            return
        failed = threading.Event()

        def read(item: tuple[str, int]) -> None:
            if not failed.is_set():
                try:
                    self.read_end(*item)
                except Exception:  # noqa: BLE001 (only a head start: DuckDB reads the end again and reports)
                    failed.set()

        with ThreadPoolExecutor(min(PARALLEL_ENDS, len(todo)), thread_name_prefix="svcluster-ends") as pool:
            list(pool.map(read, todo))

    def chunk_ends(self, key: str, tail: bytes) -> list[int]:
        """Where a table file's column chunks end (``chunk_ends`` of its kept end), parsed once."""
        ends = self.ends.get(key)
        if ends is None:
            ends = self.ends[key] = chunk_ends(tail)
        return ends

    def block(self, key: str, start: int, end: int, stop: int, size: int) -> tuple[int, bytes]:
        """A block of a table file holding bytes ``[start, end)``: one read before or under way
        (by any of the file's handles: DuckDB opens a file once per thread), else ``[start, stop)``
        read now. Reads of other bytes of the file go on at once; two threads that want the same
        bytes read them once."""
        while True:
            with self.blocks_lock:
                found = self._kept_block(key, start, end)
                if found is not None:
                    return found
                under_way = next((event for (k, s, e), event in self.reading.items()
                                  if k == key and s <= start and end <= e), None)
                if under_way is None:
                    done = self.reading[(key, start, stop)] = threading.Event()
                    break
            under_way.wait()  # then look again (kept, unless already pushed out or the read failed)
        try:
            data = self.read_range(key, start, stop, size)
            with self.blocks_lock:
                self.blocks[(key, start)] = data
                self.blocks_total += len(data)
                while self.blocks_total > BLOCK_BYTES and len(self.blocks) > 1:
                    self.blocks_total -= len(self.blocks.popitem(last=False)[1])
        finally:
            with self.blocks_lock:
                del self.reading[(key, start, stop)]
            done.set()
        return start, data

    def _kept_block(self, key: str, start: int, end: int) -> tuple[int, bytes] | None:
        """A kept block holding ``[start, end)`` of ``key`` (the caller holds ``blocks_lock``)."""
        for (k, block_start), data in self.blocks.items():
            if k == key and block_start <= start and end <= block_start + len(data):
                self.blocks.move_to_end((k, block_start))
                return block_start, data
        return None

    # what DuckDB may ask of other objects (listings, writes of a COPY TO): s3fs's answers
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        return self.s3.ls(path, detail=detail, **kwargs)

    def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        return self.s3.find(path, *args, **kwargs)

    def mkdir(self, path: str, *args: Any, **kwargs: Any) -> None:
        self.s3.mkdir(path, *args, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.s3.makedirs(path, exist_ok=exist_ok)

    def rm(self, path: str, *args: Any, **kwargs: Any) -> None:
        self.s3.rm(path, *args, **kwargs)

    def rm_file(self, path: str) -> None:
        self.s3.rm_file(path)

    def mv(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> None:
        self.s3.mv(path1, path2, *args, **kwargs)

    def tail(self, key: str) -> bytes | None:
        """What is kept of a table file's end (a small file whole): from memory, else from
        the disk cache (then kept in memory too); None when neither has it."""
        with self.kept_lock:
            data = self.kept.get(key)
            if data is not None:
                self.kept.move_to_end(key)
                return data
        data = self.disk.tail(key)
        if data is not None:
            self._keep(key, data)
        return data

    def keep_tail(self, key: str, data: bytes) -> None:
        """Keep what was read of a table file's end, in memory and in the disk cache."""
        self._keep(key, data)
        self.disk.put_tail(key, data)

    def _keep(self, key: str, data: bytes) -> None:
        with self.kept_lock:
            old = self.kept.pop(key, None)
            self.kept_total += len(data) - (len(old) if old is not None else 0)
            self.kept[key] = data
            while self.kept_total > KEPT_BYTES and len(self.kept) > 1:
                self.kept_total -= len(self.kept.popitem(last=False)[1])


def table_reader_fs(storage_options: Mapping[str, Any], details: Mapping[str, tuple[int, int]], objects: S3Objects) -> TableFiles:
    """A new filesystem for DuckDB's reads of the lake's table files, made with the lake
    filesystem's options, the data files' details its Delta tables learn, and their
    ``S3Objects``; one per view database, so what it remembers in memory lives as long as the
    database."""
    return TableFiles(storage_options, details, objects)
