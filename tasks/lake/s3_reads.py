"""How DuckDB reads an S3 lake's table files: through s3fs, with what a data file never changes
remembered.

Delta data files (``tables/<table>/part-*.parquet``) and the schema files beside them are written
once under a unique name and never changed, so what was read of them holds for as long as the
process runs. DuckDB asks for a file's details several times while it plans and scans (each a HEAD
request through s3fs) and opens it once to plan and again to scan, reading its footer in pieces (a
GET each); this filesystem answers every ask after the first from memory, and reads a small file
whole, once, keeping the bytes of recent ones (``SMALL_FILE_BYTES``, ``KEPT_BYTES``). Listings,
the Delta log and blobs are never cached (other processes add to them).
"""

from __future__ import annotations

import io
import re
import threading
from collections import OrderedDict
from functools import cache
from typing import Any

SMALL_FILE_BYTES = 8 * 1024 * 1024  # a table file up to this size is read whole, in one request
KEPT_BYTES = 256 * 1024 * 1024  # the bytes of the small files read last, kept in memory
_IMMUTABLE = re.compile(r"/tables/[^/]+/(part-[^/]+|_svcluster_schema-[0-9a-f]+)\.parquet$")


def is_immutable(path: str) -> bool:
    """Whether ``path`` is a table file written once under a unique name."""
    return bool(_IMMUTABLE.search(path))


@cache
def _table_files_s3() -> type:
    import s3fs  # only S3 lakes need it

    class TableFilesS3(s3fs.S3FileSystem):
        """s3fs that remembers the details of immutable table files once seen."""

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.immutable_infos: dict[str, dict[str, Any]] = {}
            self.kept: OrderedDict[str, bytes] = OrderedDict()
            self.kept_lock = threading.Lock()

        def _open(self, path, mode="rb", **kwargs):
            key = self._strip_protocol(path)
            if mode != "rb" or not is_immutable(key) or self.info(key)["size"] > SMALL_FILE_BYTES:
                return super()._open(path, mode=mode, **kwargs)
            with self.kept_lock:
                data = self.kept.get(key)
                if data is not None:
                    self.kept.move_to_end(key)
            if data is None:
                data = self.cat_file(key)
                with self.kept_lock:
                    self.kept[key] = data
                    while sum(len(v) for v in self.kept.values()) > KEPT_BYTES and len(self.kept) > 1:
                        self.kept.popitem(last=False)
            return io.BytesIO(data)

        async def _info(self, path, *args: Any, **kwargs: Any):
            key = self._strip_protocol(path)
            known = self.immutable_infos.get(key)
            if known is not None:
                return dict(known)
            out = await super()._info(path, *args, **kwargs)
            if out.get("type") == "file" and is_immutable(key):
                self.immutable_infos[key] = dict(out)
            return out

    return TableFilesS3


def table_reader_fs(storage_options: dict[str, Any]):
    """A new s3fs filesystem for DuckDB's reads of the lake's table files, made with the lake
    filesystem's options (never fsspec's cached instance: one made for an earlier endpoint in the
    environment would be handed back); one per view database, so what it remembers lives as
    long as the database."""
    return _table_files_s3()(**{**storage_options, "skip_instance_cache": True})
