"""This machine's cache folder: ``$SVCLUSTER_CACHE`` or ``~/.cache/svcluster``.

What lives there can always be made again (ONNX exports, CPU probes, precision decisions, what
was read of an S3 lake's immutable files and tables' latest versions); it holds no secret and
deleting it costs only time.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where this machine's caches live: ``$SVCLUSTER_CACHE`` or ``~/.cache/svcluster``."""
    return Path(os.environ.get("SVCLUSTER_CACHE") or Path.home() / ".cache" / "svcluster").expanduser()

