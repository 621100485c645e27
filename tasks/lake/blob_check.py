"""Views whose image blob is missing or damaged: found, marked ``failed``, fetched again.

A view is ``ok`` only while its blob can be used. When it cannot, the view gets a new
``images`` row with status ``failed`` and a reason in plain words that starts with ``blob``
("blob missing: blobs/ab/….jpg", "blob unreadable: not a JPEG (…)", "blob changed since it was
fetched: …"); the row keeps the panorama, the view settings and the path of the bad blob. The
fetch plan treats ``failed`` as still to do, so the next ``svcluster fetch`` buys that view
again (one billed image request per bad view: the user asked for it by running fetch).

* embed marks a view whose blob it cannot read or decode (:func:`mark_failed`) and goes on;
* fetch, before planning, runs :func:`check_map_blobs`: one listing of the lake's blobs finds
  'ok' views whose blob is gone; ``--verify`` also reads every blob of the map and compares
  its sha256 with the one recorded. A blob that is damaged (changed bytes, or found unreadable
  by embed) is removed, so the re-fetched bytes are stored in its place (blobs are
  content-addressed and never overwritten).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.lake.schemas import IMAGES

MISSING = "blob missing"
UNREADABLE = "blob unreadable"
CHANGED = "blob changed since it was fetched"
VERIFY_THREADS = 8
DEFAULT_SETTINGS = (640, 640, 90.0, 0.0)  # (width, height, fov, pitch) of a view that names none


def view_settings_of(row: dict) -> tuple[int, int, float, float]:
    """(width, height, fov, pitch) of an ``images`` row (the views' values: never null)."""
    return (int(row["width"]), int(row["height"]), float(row["fov"]), float(row["pitch"]))


@dataclass(frozen=True)
class BadView:
    """One view whose blob cannot be used, and why (plain words, starting with ``blob``)."""

    location_id: str
    heading: int
    reason: str
    settings: tuple[int, int, float, float] = DEFAULT_SETTINGS  # the view's (width, height, fov, pitch)


@dataclass
class BlobCheck:
    """What :func:`check_map_blobs` found among a map's views."""

    checked: int = 0  # views whose blob was looked at
    verified: bool = False  # every blob was read and hashed (--verify)
    missing: int = 0  # 'ok' views whose blob is gone
    changed: int = 0  # 'ok' views whose blob's bytes no longer hash to its sha256 (--verify)
    unreadable: int = 0  # views marked failed by embed whose damaged blob was removed


def missing_reason(path: str) -> str:
    return f"{MISSING}: {path}"


def unreadable_reason(problem: str) -> str:
    return f"{UNREADABLE}: {problem}"


def mark_failed(lake: Lake, bad: list[BadView]) -> int:
    """Append a ``failed`` images row for each view in ``bad``, copied from its latest row (one
    append). Returns the number of rows written."""
    if not bad:
        return 0
    ids = sorted({b.location_id for b in bad})
    current = {
        (r["location_id"], r["heading"], view_settings_of(r)): r
        for r in lake.query(load_sql("lake/blob_view_rows"), {"ids": ids}).to_pylist()
    }
    rows = []
    for b in bad:
        row = dict.fromkeys(IMAGES.schema.names)
        row.update(current.get((b.location_id, b.heading, b.settings), {}))
        width, height, fov, pitch = b.settings
        row.update(
            location_id=b.location_id, heading=b.heading, status="failed", reason=b.reason, written_at=None,
            width=width, height=height, fov=fov, pitch=pitch,
        )  # fmt: skip
        rows.append(row)
    lake.append("images", pa.Table.from_pylist(rows, schema=IMAGES.schema))
    return len(rows)


def check_map_blobs(lake: Lake, map_name: str, verify: bool = False) -> BlobCheck:
    """Find the map's views whose blob is missing (one listing of the lake's blobs) or, with
    ``verify``, whose bytes no longer match their sha256 (every blob read); mark them failed so
    the fetch plan buys them again. Blobs found damaged — by ``verify``, or by embed earlier —
    are removed so the new bytes can be stored under their name."""
    rows = lake.query(load_sql("lake/blob_check_views"), {"map": map_name}).to_pylist()
    result = BlobCheck(checked=sum(r["status"] == "ok" for r in rows), verified=verify)
    if not rows:
        return result
    # Views embed found unreadable: their blob is removed (it is re-bought in this run).
    # A blob embed could not decode is damaged; one it found missing may be back (a restored
    # copy of the lake): only the first kind is removed.
    damaged = {r["path"] for r in rows if r["status"] == "failed" and r["reason"].startswith(UNREADABLE)}
    ok = [r for r in rows if r["status"] == "ok"]
    present = set(lake.list("blobs"))
    removed = set()
    for path in sorted(damaged & present):
        lake.delete(path)
        removed.add(path)
    result.unreadable = sum(1 for r in rows if r["status"] == "failed" and r["path"] in removed and r["reason"].startswith(UNREADABLE))
    bad: list[BadView] = []
    for r in ok:
        if r["path"] not in present or r["path"] in removed:
            bad.append(BadView(r["location_id"], r["heading"], missing_reason(r["path"]), view_settings_of(r)))
            result.missing += 1
    if verify:
        by_path: dict[str, list[dict]] = {}
        for r in ok:
            if r["path"] in present and r["path"] not in removed:
                by_path.setdefault(r["path"], []).append(r)
        with ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="svcluster-verify") as pool:
            digests = dict(zip(by_path, pool.map(lambda p: _digest(lake, p), by_path)))
        for path, views in by_path.items():
            digest = digests[path]
            expected = {v["sha256"] or _name_digest(path) for v in views}
            if digest is None:
                for v in views:
                    bad.append(BadView(v["location_id"], v["heading"], missing_reason(path), view_settings_of(v)))
                    result.missing += 1
            elif expected != {digest}:
                lake.delete(path)
                for v in views:
                    reason = f"{CHANGED}: its bytes no longer match the sha256 recorded ({path})"
                    bad.append(BadView(v["location_id"], v["heading"], reason, view_settings_of(v)))
                    result.changed += 1
    mark_failed(lake, bad)
    return result


def _digest(lake: Lake, path: str) -> str | None:
    """The sha256 of a blob's bytes, or None when it is gone."""
    if not lake.exists(path):
        return None
    return hashlib.sha256(lake.read_bytes(path)).hexdigest()


def _name_digest(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(".", 1)[0]
