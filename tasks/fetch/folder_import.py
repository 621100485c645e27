"""Import images already downloaded by the original notebook instead of paying for them again.

The notebook's layout::

    panoramas/location_<i>/heading_<h>.jpg

where ``i`` is the location's 0-based position in the map file and ``h`` the heading in whole
degrees. ``DIR`` may be the folder that contains ``panoramas/`` or ``panoramas/`` itself.

Each file that fills a missing or failed (location, heading) of the map is checked to be a
whole JPEG, stored as it is in a content-addressed blob, and recorded in ``images`` with
``source = 'folder'`` (pano id: the map's, capture date unknown) — the same rows a fetch writes,
so embed and everything after cannot tell the difference. A file that is not a readable JPEG
is recorded as ``failed`` (a later ``svcluster fetch`` fetches that view). Views already ``ok``
in the lake are skipped; files matching no location position or no wanted heading are counted
as ``unmatched_files``; views the map wants but the folder lacks as ``missing_files``. Like a fetch, it is resumable: a rerun imports only what is missing.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import (
    FetchItem,
    FetchOptions,
    FetchResult,
    FetchStats,
    ImageRowWriter,
    plan_views,
    record_map_views,
    gc_blobs,
    result_of,
    image_row,
)
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.progress import NullProgress, Progress
from svcluster.tasks.fetch.client import InvalidImage, inspect_jpeg

LOCATION_DIR = re.compile(r"location_(\d+)")
HEADING_FILE = re.compile(r"heading_(\d+)(?:\.0+)?\.(?:jpg|jpeg)", re.IGNORECASE)
MAX_IMPORT_THREADS = 8


def panoramas_dir(folder: str | Path) -> Path:
    """The ``panoramas`` folder for DIR (DIR itself or DIR/panoramas); SvclusterError if neither."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise SvclusterError(
            f"--from-folder {folder}: not a folder ({what}); give the folder that holds the notebook's "
            "panoramas/ folder, or panoramas/ itself"
        )
    if (root / "panoramas").is_dir():
        return root / "panoramas"
    if any(LOCATION_DIR.fullmatch(p.name) and p.is_dir() for p in root.iterdir()):
        return root
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    held = f"it holds {', '.join(names[:5])}{' …' if len(names) > 5 else ''}" if names else "it is empty"
    raise SvclusterError(
        f"--from-folder {folder}: no panoramas/location_<i>/heading_<h>.jpg files found in it ({held}); "
        "give the folder that holds panoramas/ (or panoramas/ itself), laid out as "
        "panoramas/location_0/heading_0.jpg, where 0 is the position in the map file and the heading in degrees"
    )


def bad_file_reason(path: Path, panoramas: Path, problem: str, map_name: str) -> str:
    """The ``failed`` reason of a view whose folder file cannot be used: which file, what is
    wrong with it, and what to do."""
    try:
        name = path.relative_to(panoramas.parent).as_posix()
    except ValueError:
        name = str(path)
    return (
        f"folder file {name}: {problem}; replace it and import again, or fetch that view from the API "
        f"(svcluster fetch --map {map_name})"
    )


def scan_folder(panoramas: Path) -> dict[tuple[int, int], Path]:
    """The image files of the notebook layout, by (position, heading)."""
    found: dict[tuple[int, int], Path] = {}
    for loc_dir in panoramas.iterdir():
        m = LOCATION_DIR.fullmatch(loc_dir.name)
        if not m or not loc_dir.is_dir():
            continue
        position = int(m.group(1))
        for f in loc_dir.iterdir():
            h = HEADING_FILE.fullmatch(f.name)
            if h and f.is_file():
                found[(position, int(h.group(1)))] = f
    return found


def _import_file(
    lake: Lake, item: FetchItem, heading: int, path: Path, options: FetchOptions, panoramas: Path, map_name: str
) -> dict[str, Any]:
    common = {"pano_id": item.pano_id}
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = bad_file_reason(path, panoramas, f"unreadable ({exc.strerror})", map_name)
        return image_row(item.location_id, heading, "failed", options, "folder", reason=reason, **common)
    try:
        width, height = inspect_jpeg(data)
    except InvalidImage as exc:
        reason = bad_file_reason(path, panoramas, exc.reason, map_name)
        return image_row(item.location_id, heading, "failed", options, "folder", reason=reason, **common)
    blob, digest = lake.put_blob(data, "jpg")
    return image_row(
        item.location_id, heading, "ok", options, "folder", path=blob, sha256=digest,
        size_bytes=len(data), width=width, height=height, **common,
    )  # fmt: skip


def import_folder(
    lake: Lake,
    map_name: str,
    folder: str | Path,
    options: FetchOptions,
    progress: Progress = NullProgress(),
) -> FetchResult:
    """Record the notebook's downloaded images of ``map_name`` in the lake (see module doc)."""
    options = options.checked()
    panoramas = panoramas_dir(folder)
    files = scan_folder(panoramas)
    plan = plan_views(lake, map_name, options)
    record_map_views(lake, map_name, options, source="folder")
    work = [(item, h, files[(item.position, h)]) for item in plan.items for h in item.headings if (item.position, h) in files]
    wanted = set(options.headings)
    unmatched = sum(1 for (pos, h) in files if pos not in plan.positions or h not in wanted)
    stats = FetchStats(skipped=plan.skipped)
    missing = sum(len(i.headings) for i in plan.items) - len(work)
    writer = ImageRowWriter(lake, options.chunk_rows, options.flush_seconds)
    started = time.perf_counter()
    progress.start(len(work), f"importing images from {panoramas}")
    try:
        with ThreadPoolExecutor(max(1, min(options.concurrency, MAX_IMPORT_THREADS))) as pool:
            for row in pool.map(lambda w: _import_file(lake, w[0], w[1], w[2], options, panoramas, map_name), work):
                stats.count([row])
                writer.add([row])
                progress.advance(1)
    finally:
        writer.flush()
        progress.finish()
        stats.elapsed_seconds = time.perf_counter() - started
    removed = gc_blobs(lake).removed if work else 0
    result = result_of(map_name, "folder", plan, stats, removed, unmatched)
    result.missing_files = missing
    return result
