"""Reads of single S3 objects through delta-rs's object store (``deltalake.fs``), for the checks a
reader of an S3 lake makes before it reads any table: does a commit file exist, what does it hold.

A process that reads a lake other processes wrote mostly asks such questions, and answers the
rest from the machine cache (``snapshots.py``, ``s3_reads.py``). delta-rs is loaded already (it
reads the tables) and its store is ready in milliseconds, where s3fs costs a reader about half a
second to import and its first request (docs/lake.md, "Speed of the lake"): s3fs is left to
the reads that need it.

Every read here is one ranged GET from an object's start (a range past its end is answered
with the whole object; a 1-byte range learns whether it exists): delta-rs's store holds the
interpreter lock while it asks an object's size, so it is never asked that (an S3 server in this
process would wait on it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from deltalake.fs import DeltaStorageHandler


def _bucket_and_key(path: str) -> tuple[str, str]:
    """``bucket/key`` or ``s3://bucket/key`` as (bucket, key)."""
    bucket, _, key = path.split("://", 1)[-1].partition("/")
    return bucket, key


class S3Objects:
    """Ranged GETs of one endpoint's objects, made with the lake's deltalake storage options."""

    def __init__(self, storage_options: Mapping[str, str]):
        self.options = dict(storage_options)
        self._sizes: dict[str, dict[str, int]] = {}  # per bucket: the known size of each key
        self._stores: dict[str, DeltaStorageHandler] = {}  # per bucket: a store that knows them
        self._lock = threading.Lock()

    def know(self, sizes: Mapping[str, int]) -> None:
        """Remember the sizes of objects (``bucket/key``: bytes) that never change, so that
        ``read_range`` reads them with one store per bucket (made again only for a key it lacks)."""
        with self._lock:
            for path, size in sizes.items():
                bucket, key = _bucket_and_key(path)
                known = self._sizes.setdefault(bucket, {})
                if known.get(key) != size:
                    known[key] = size
                    self._stores.pop(bucket, None)

    def read_range(self, path: str, start: int, end: int, size: int) -> bytes:
        """Bytes ``[start, end)`` of the object at ``path``, whose size is ``size`` and never
        changes (a table file): one ranged GET, without the interpreter lock while it waits."""
        bucket, key = _bucket_and_key(path)
        with self._lock:
            store = self._stores.get(bucket) if self._sizes.get(bucket, {}).get(key) == size else None
        if store is None:
            self.know({path: size})
            with self._lock:
                store = self._stores.get(bucket)
                if store is None:
                    store = self._stores[bucket] = DeltaStorageHandler(
                        f"s3://{bucket}", self.options, known_sizes=dict(self._sizes[bucket]))
        return store.open_input_file(key).read_at(end - start, start)

    def read(self, path: str, limit: int) -> bytes | None:
        """The bytes of the object at ``path`` (``bucket/key``), up to ``limit`` of them from its
        start (memory for ``limit`` bytes is set aside while it reads); None when there is no
        object there. Other storage errors raise."""
        bucket, key = _bucket_and_key(path)
        store = DeltaStorageHandler(f"s3://{bucket}", self.options, known_sizes={key: limit})
        try:
            return store.open_input_file(key).read_at(limit, 0)
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        """Whether a non-empty object is at ``path`` (one GET of its first byte)."""
        return self.read(path, 1) is not None
