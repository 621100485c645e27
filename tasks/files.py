"""Files that appear whole or not at all: written to a temporary file on the same filesystem,
flushed to disk, then renamed over the target. A reader never sees half a file, and a crash or a
full disk leaves the old file (or none) and no temporary file behind. The lake's local writes,
the export's map file, the study set, the report's page and the CPU probe's cache all go through
``atomic_write`` (files a library writes by name, the ONNX exports, are renamed the same way)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(target: str | Path, *, text: bool = False, tmp_dir: str | Path | None = None) -> Iterator[IO[Any]]:
    """An open file (bytes, or UTF-8 text) that becomes ``target`` when the block ends without
    an error; on an error it is removed and ``target`` is untouched. The temporary file lies
    beside the target (``.NAME.xxxxxxxx.tmp``), or in ``tmp_dir`` (on the same filesystem) when
    its owner cleans leftovers up there (the lake's ``_tmp/``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if tmp_dir is None:
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    else:
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        tmp = Path(tmp_dir) / f"{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "w" if text else "wb", encoding="utf-8" if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def cache_dir() -> Path:
    """This machine's cache folder: ``$SVCLUSTER_CACHE`` or ``~/.cache/svcluster``. What lives
    there can always be made again and holds no secret."""
    return Path(os.environ.get("SVCLUSTER_CACHE") or Path.home() / ".cache" / "svcluster").expanduser()
