"""The fetch step: Street View images of a map's places into the lake, resumably.

Per place: one free metadata request (``pano=`` when the place has a pano id — from an earlier
fetch of this place, else the map's decoded id — otherwise ``location=``, with ``source`` when
asked) pins the panorama; then one billed image request per missing heading, by that pano id,
so every view of a place comes from the same panorama. Google documents that pano ids change
and that ZERO_RESULTS for a pano id means it was deleted: such an answer (or NOT_FOUND) is
followed by exactly one free ``location=`` lookup, and only when that finds nothing too is the
place ``no_imagery``; otherwise the refreshed id is what the rows record (``pano_id``, with the
id asked for in ``requested_pano_id``).

What happens is recorded per (place, heading) in the ``images`` table: ``ok`` (bytes stored as
received in a content-addressed blob), ``no_imagery`` (no image request spent), ``skipped``
(``--official-only`` and a third-party panorama: nothing bought, see
``svcluster.tasks.fetch.client.is_official``) or ``failed`` with the reason (after retries); with the
metadata's ``copyright``, ``official``, ``capture_date`` (as given: YYYY-MM, YYYY or null) and
``pano_lat``/``pano_lng``. A refused key or request raises :class:`FatalApiError` at once.

No panorama and heading is bought twice with the same view settings (size, fov, pitch): places
that resolve to one panorama (a place without a pano id that finds another's, a stale id
refreshed to a panorama another place has) share its views — within a batch an image request in
flight is awaited by every place that needs it, and a view an earlier run bought (``ok`` in the
lake, any place, any map) is reused: the new place gets its own row naming the same blob, and no
request is made. Batches running side by side (a Prefect flow) share only what the lake has.

Resume comes from the lake, not from memory: :func:`plan_fetch` asks the ``images`` view what
is missing or failed. Blobs are written before the rows that name them, and rows are appended
one chunk at a time (``chunk_rows`` or ``flush_seconds``, whichever comes first), so a process
killed at any moment loses at most the chunk in flight: its blobs are whole (atomic writes) but
unreferenced; the rerun fetches those views again (same bytes, same blob) and
:func:`gc_blobs` removes any blob no row refers to.

Work is split for Prefect/Dask by :func:`fetch_batch`, which takes only picklable values (a
lake URI string, dataclasses, Settings). ``qps`` and ``concurrency`` apply per batch: a flow
running batches side by side should divide them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from svcluster.sql import load_sql
from svcluster.tasks.lake.blob_check import BlobCheck, check_map_blobs
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Lake, open_lake
from svcluster.tasks.options import option
from svcluster.tasks.progress import NullProgress, Progress
from svcluster.tasks.lake.schemas import IMAGES, MAP_VIEWS
from svcluster.tasks.settings import Settings
from svcluster.tasks.fetch.client import (
    SOURCES,
    FatalApiError,
    NoImagery,
    Panorama,
    RequestFailed,
    Stopped,
    StreetViewClient,
    redact,
)

log = logging.getLogger("svcluster.fetch")

MAX_SIDE = 640
# Blob writer threads per batch, beside the event loop: few on a local disk (each wakes and takes
# the GIL from the loop: more threads cost more system CPU for the same images, docs/fetch.md,
# 'Why one event loop'), many on S3, where a write is a request of tens of milliseconds.
STORE_THREADS_LOCAL = 2
STORE_THREADS_REMOTE = 16
GC_MIN_AGE_SECONDS = 600.0  # younger orphans may belong to a fetch still running elsewhere

__all__ = [
    "FatalApiError",
    "FetchItem",
    "FetchOptions",
    "FetchPlan",
    "FetchResult",
    "FetchStats",
    "GcResult",
    "ImageRowWriter",
    "SharedViews",
    "checked_source",
    "check_angles",
    "parse_headings",
    "parse_size",
    "fetch_batch",
    "fetch_map",
    "gc_blobs",
    "plan_fetch",
    "plan_views",
    "record_map_views",
    "replan_batch",
]


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: which views, how fast, how patiently. Picklable; validate with ``checked()``.

    ``qps`` 0 lifts the rate limit. ``backoff_base``/``backoff_max`` bound the full-jitter
    exponential backoff between retries (seconds). ``chunk_rows``/``flush_seconds`` bound how
    much work a kill can lose. ``official_only``: buy no image of a panorama that is not
    Google's own (its views are recorded ``skipped``). ``source``: Google's ``source`` parameter
    of location lookups (``default`` | ``outdoor``; None sends none).
    """

    headings: tuple[int, ...] = option(
        (0, 90, 180, 270), "--headings", "Comma-separated headings in degrees.",
        text=str, parse=lambda text: {"headings": parse_headings(text)}, shown=lambda hs: ",".join(map(str, hs)),
    )  # fmt: skip
    size: str = option("640x640", "--size", "Image size WIDTHxHEIGHT (at most 640x640).")
    fov: float = option(90.0, "--fov", "Horizontal field of view, 10-120 degrees.")
    pitch: float = option(0.0, "--pitch", "Camera pitch, -90..90 degrees.")
    concurrency: int = option(16, "--concurrency", "Requests in flight (shared by the batches running at once).")
    qps: float = option(100.0, "--qps", "Requests per second at most (0 = no limit; shared by the batches running at once).")
    timeout: float = option(30.0, "--timeout", "Seconds to wait for one answer.", flow=False)
    max_retries: int = option(5, "--max-retries", "Retries of a 429/5xx/timeout.")
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    chunk_rows: int = option(1000, "--chunk-rows", "Rows per images append (a kill loses at most one chunk).", flow=False)
    flush_seconds: float = 10.0
    official_only: bool = option(
        False, "--official-only",
        "Buy no image of a third-party photosphere (copyright not Google's): those views are recorded 'skipped'.",
    )  # fmt: skip
    source: str | None = option(
        None, "--source", "Google's source for location lookups: default | outdoor (outdoor finds no photospheres)."
    )

    def checked(self) -> "FetchOptions":
        """These options with headings normalised, or SvclusterError naming the bad option."""
        headings = []
        for h in self.headings:
            try:
                value = float(h)
            except (TypeError, ValueError):
                raise SvclusterError(f"--headings: {h!r} is not a number") from None
            if value != int(value) or not 0 <= value < 360:
                raise SvclusterError(f"--headings: {h!r} must be a whole number of degrees from 0 to 359")
            if int(value) not in headings:
                headings.append(int(value))
        if not headings:
            raise SvclusterError("--headings: give at least one heading")
        width, height = parse_size(self.size)
        check_angles(self.fov, self.pitch)
        if not 1 <= self.concurrency <= 512:
            raise SvclusterError(f"--concurrency must be from 1 to 512, not {self.concurrency}")
        if self.qps < 0:
            raise SvclusterError(f"--qps must be 0 (unlimited) or more, not {self.qps:g}")
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise SvclusterError("timeout must be positive; retries and backoff cannot be negative")
        if self.chunk_rows < 1 or self.flush_seconds <= 0:
            raise SvclusterError("--chunk-rows must be at least 1 and flush_seconds positive")
        source = checked_source(self.source)
        size = f"{width}x{height}"
        return replace(
            self, headings=tuple(headings), size=size, fov=float(self.fov), pitch=float(self.pitch),
            official_only=bool(self.official_only), source=source,
        )  # fmt: skip

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of ``size`` (options already checked)."""
        width, height = self.size.split("x")
        return int(width), int(height)


def parse_size(size: str) -> tuple[int, int]:
    """``"640x640"`` -> (640, 640): the Static API's ``size`` (each side at most 640), or
    SvclusterError naming ``--size``."""
    match = re.fullmatch(r"(\d+)x(\d+)", str(size).strip().lower())
    if not match or not all(1 <= int(v) <= MAX_SIDE for v in match.groups()):
        raise SvclusterError(f"--size must be WIDTHxHEIGHT with sides from 1 to {MAX_SIDE}, not {size!r}")
    return int(match.group(1)), int(match.group(2))


def check_angles(fov: float | None, pitch: float | None) -> None:
    """The Static API's ``fov`` (10-120) and ``pitch`` (-90..90), where given; SvclusterError otherwise."""
    if fov is not None and not 10 <= fov <= 120:
        raise SvclusterError(f"--fov must be from 10 to 120 degrees, not {fov:g}")
    if pitch is not None and not -90 <= pitch <= 90:
        raise SvclusterError(f"--pitch must be from -90 to 90 degrees, not {pitch:g}")


def parse_headings(text: str) -> tuple[int, ...]:
    """``"0,90,180,270"`` -> (0, 90, 180, 270); SvclusterError naming the bad entry."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise SvclusterError(f"--headings: {part!r} is not a whole number of degrees") from None
    return tuple(out)


def checked_source(source: str | None) -> str | None:
    """Google's ``source`` parameter, normalised (``default`` | ``outdoor``; None: none sent),
    or SvclusterError naming the option."""
    if source is None:
        return None
    value = str(source).strip().lower()
    if value not in SOURCES:
        raise SvclusterError(f"--source must be one of {', '.join(SOURCES)}, not {source!r}")
    return value


@dataclass(frozen=True)
class FetchItem:
    """One place with the headings it still needs and the panorama to ask for.

    ``pano_id`` is the panorama an earlier fetch pinned for this place, else the map's pano id
    (decoded), else None (the metadata endpoint is asked by ``lat,lng``, the place's first
    object's coordinates, which also serve to refresh a deleted id).
    """

    location_id: str
    position: int
    lat: float
    lng: float
    pano_id: str | None
    headings: tuple[int, ...]


@dataclass
class FetchStats:
    """What a batch did: rows written per status, requests made, wall time."""

    ok: int = 0  # reused views included
    no_imagery: int = 0
    failed: int = 0
    skipped: int = 0  # views already done in the lake: nothing requested (not the status)
    third_party_skipped: int = 0  # status 'skipped': third-party panoramas with --official-only
    reused: int = 0  # ok views whose bytes another place's view of the same panorama holds
    refreshed: int = 0  # places whose pano id was deleted and found again by location
    requests: int = 0
    metadata_requests: int = 0
    image_requests: int = 0
    elapsed_seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def count(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            status = "third_party_skipped" if r["status"] == "skipped" else r["status"]
            setattr(self, status, getattr(self, status) + 1)
            if r["status"] == "failed":
                self.failure_reasons[r["reason"]] = self.failure_reasons.get(r["reason"], 0) + 1

    def merge(self, other: "FetchStats") -> "FetchStats":
        """The sum of two batches' stats (elapsed: the longer, as batches run side by side)."""
        reasons = Counter(self.failure_reasons)
        reasons.update(other.failure_reasons)
        return FetchStats(
            ok=self.ok + other.ok,
            no_imagery=self.no_imagery + other.no_imagery,
            failed=self.failed + other.failed,
            skipped=self.skipped + other.skipped,
            third_party_skipped=self.third_party_skipped + other.third_party_skipped,
            reused=self.reused + other.reused,
            refreshed=self.refreshed + other.refreshed,
            requests=self.requests + other.requests,
            metadata_requests=self.metadata_requests + other.metadata_requests,
            image_requests=self.image_requests + other.image_requests,
            elapsed_seconds=max(self.elapsed_seconds, other.elapsed_seconds),
            failure_reasons=dict(reasons),
        )


@dataclass
class FetchResult:
    """What a fetch (or folder import) of a map did, for the CLI summary and ``--json``."""

    map: str
    source: str  # api | folder
    locations: int  # places
    views: int  # places x headings wanted
    ok: int
    no_imagery: int
    failed: int
    skipped: int  # views already done in the lake
    requests: int
    metadata_requests: int
    image_requests: int
    elapsed_seconds: float
    images_per_second: float
    failure_reasons: dict[str, int]
    orphan_blobs_removed: int = 0
    unmatched_files: int = 0  # folder import: files that match no wanted (location, heading)
    missing_files: int = 0  # folder import: views still missing that the folder has no file for
    third_party_skipped: int = 0  # views recorded 'skipped' (--official-only, a third-party panorama)
    reused: int = 0  # ok views recorded from a view of the same panorama already bought: no request
    refreshed: int = 0  # places whose deleted pano id was refreshed by a location lookup
    verified: bool = False  # --verify: every ok blob of the map was read and its sha256 checked
    blobs_missing: int = 0  # ok views whose blob was gone: marked failed, fetched again
    blobs_changed: int = 0  # ok views whose blob no longer matched its sha256 (--verify)
    blobs_unreadable: int = 0  # views embed found unreadable: damaged blob removed, fetched again


@dataclass(frozen=True)
class GcResult:
    """What a blob clean-up found: orphans removed, and orphans kept because they are recent."""

    blobs: int
    removed: int
    kept_recent: int


@dataclass(frozen=True)
class FetchPlan:
    """A map's fetch plan: the items still to do, and how many locations and views it has."""

    items: list[FetchItem]
    locations: int
    views: int  # locations x wanted headings
    positions: frozenset[int] = frozenset()  # every location's position in the map file

    @property
    def skipped(self) -> int:
        """Views already done in the lake (ok, no_imagery; skipped with --official-only)."""
        return self.views - sum(len(i.headings) for i in self.items)


# ---- planning ------------------------------------------------------------------------------


def _settings_params(options: FetchOptions) -> dict[str, Any]:
    """The view settings of ``options`` (checked) as the SQL parameters $width, $height, $fov, $pitch."""
    width, height = options.dimensions
    return {"width": width, "height": height, "fov": options.fov, "pitch": options.pitch}


def plan_views(lake: Lake, map_name: str, options: FetchOptions) -> FetchPlan:
    """The plan of ``plan_fetch`` with the map's totals (options already checked)."""
    params = {"map": map_name, "headings": list(options.headings), "official_only": options.official_only, **_settings_params(options)}
    rows = lake.query(load_sql("fetch/plan"), params).to_pylist()
    if not rows:
        raise NotFoundError(f"map {map_name!r} has no locations in the lake at {lake.uri}; run `svcluster ingest` first")
    items = [
        FetchItem(r["location_id"], r["position"], r["lat"], r["lng"], r["pano_id"], tuple(r["headings"]))
        for r in rows
        if r["headings"]
    ]
    return FetchPlan(items, len(rows), len(rows) * len(options.headings), frozenset(r["position"] for r in rows))


def replan_batch(lake: Lake, items: list[FetchItem], options: FetchOptions | None = None) -> list[FetchItem]:
    """``items`` without the views the lake now has (``ok``/``no_imagery``, and ``skipped`` when
    ``options.official_only``), on the panorama an earlier attempt pinned: what a retried batch
    still has to fetch, so that no view its failed attempt already stored is requested (and
    billed) again."""
    if not items:
        return []
    official_only = bool(options and options.official_only)
    params = {"ids": [i.location_id for i in items], "official_only": official_only, **_settings_params((options or FetchOptions()).checked())}
    rows = lake.query(load_sql("fetch/batch_done"), params).to_pylist()
    known = {r["location_id"]: r for r in rows}
    out = []
    for item in items:
        row = known.get(item.location_id)
        if row is None:
            out.append(item)
            continue
        done = set(row["done_headings"] or ())
        headings = tuple(h for h in item.headings if h not in done)
        if headings:
            out.append(replace(item, headings=headings, pano_id=row["pinned_pano_id"] or item.pano_id))
    return out


def plan_fetch(lake: Lake, map_name: str, options: FetchOptions) -> list[FetchItem]:
    """The places of a map with views still missing or failed, in input order."""
    return plan_views(lake, map_name, options.checked()).items


# ---- writing -------------------------------------------------------------------------------


class ImageRowWriter:
    """Buffers ``images`` rows and appends them one chunk per Parquet file: when ``chunk_rows``
    are waiting or ``flush_seconds`` have passed since the last append."""

    def __init__(self, lake: Lake, chunk_rows: int, flush_seconds: float):
        self.lake, self.chunk_rows, self.flush_seconds = lake, chunk_rows, flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self.chunk_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        self.lake.append("images", pa.Table.from_pylist(rows, schema=IMAGES.schema))


_IMAGE_COLUMNS = tuple(IMAGES.schema.names)


def image_row(location_id: str, heading: int, status: str, options: FetchOptions, source: str, **values: Any) -> dict[str, Any]:
    """One ``images`` row (columns not given are null) of a view at ``options``' settings: every
    row, whatever its status, records the size, fov and pitch asked for (part of the view's key)."""
    row = dict.fromkeys(_IMAGE_COLUMNS)
    width, height = options.dimensions
    row.update(
        location_id=location_id, heading=heading, status=status, width=width, height=height, fov=options.fov,
        pitch=options.pitch, source=source,
    )  # fmt: skip
    row.update(values)
    return row


# ---- fetching ------------------------------------------------------------------------------

THIRD_PARTY_REASON = "third-party panorama (its copyright is not Google's): not bought with --official-only"

Store = Callable[[bytes], Awaitable[tuple[str, str]]]


@dataclass
class _Outcome:
    rows: list[dict[str, Any]]
    fatal: FatalApiError | None = None
    reused: int = 0
    refreshed: bool = False


class SharedViews:
    """The views of panoramas this batch has bought, is buying, or found in the lake, by
    (pano id, heading) for the batch's view settings: how no panorama and heading is bought twice.

    A key holds a future whose value is the bought view (the ``images`` columns of its blob and
    the place it was bought for) or the exception that ended its request. The first place to
    ``claim`` a key buys it; every later place awaits that future and gets the same outcome. What
    the lake already has is read before a panorama's keys are claimed (``load``): all pano ids
    the plan names in one query up front, each one learned from the metadata (a location lookup,
    a refreshed id) in queries that gather every id asked for meanwhile. A lake without image
    rows is never queried.
    """

    def __init__(self, lake: Lake, options: FetchOptions, run_query: Callable[[Callable[[], Any]], Awaitable[Any]]):
        self.lake, self.options, self._run = lake, options, run_query
        self._views: dict[tuple[str, int], asyncio.Future[Any]] = {}
        self._loaded: dict[str, asyncio.Future[None]] = {}
        self._queue: list[str] = []
        self._drainer: asyncio.Task[None] | None = None
        self._lake_has_rows = any(not p.rsplit("/", 1)[-1].startswith("schema") for p in lake.table_files("images"))

    def preload(self, pano_ids: list[str]) -> None:
        """Read the lake's views of these panoramas now (before the batch's requests start)."""
        loop = asyncio.get_running_loop()
        ids = sorted({p for p in pano_ids if p} - self._loaded.keys())
        if not ids or not self._lake_has_rows:
            return
        self._remember(self._query(ids))
        for p in ids:
            self._loaded[p] = done = loop.create_future()
            done.set_result(None)

    async def load(self, pano_id: str) -> None:
        """Make sure the lake's views of ``pano_id`` are known (once per id and batch)."""
        if not self._lake_has_rows:
            return
        waiter = self._loaded.get(pano_id)
        if waiter is None:
            waiter = self._loaded[pano_id] = asyncio.get_running_loop().create_future()
            self._queue.append(pano_id)
            if self._drainer is None:
                self._drainer = asyncio.ensure_future(self._drain())
        await asyncio.shield(waiter)

    def claim(self, pano_id: str, heading: int) -> tuple[asyncio.Future[Any], bool]:
        """The future of a view, and True when the caller is the one to buy it."""
        key = (pano_id, heading)
        future = self._views.get(key)
        if future is not None:
            return future, False
        future = self._views[key] = asyncio.get_running_loop().create_future()
        return future, True

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the places resolved in this turn of the loop join the query
        try:
            while self._queue:
                ids, self._queue = self._queue, []
                try:
                    rows = await self._run(lambda ids=ids: self._query(ids))
                except Exception as exc:  # the places that wait raise it (a lake that cannot be read)
                    for p in ids:
                        self._loaded[p].set_exception(exc)
                    continue
                self._remember(rows)
                for p in ids:
                    self._loaded[p].set_result(None)
        finally:
            self._drainer = None

    def _query(self, ids: list[str]) -> list[dict[str, Any]]:
        width, height = self.options.dimensions
        params = {
            "panos": ids, "headings": list(self.options.headings), "fov": self.options.fov,
            "pitch": self.options.pitch, "width": width, "height": height,
        }  # fmt: skip
        rows = self.lake.query(load_sql("fetch/shared_views"), params).to_pylist()
        # A view is reused only while its blob is there: one whose blob went missing (or was
        # removed as damaged) is bought again.
        return [r for r in rows if self.lake.exists(r["path"])]

    def _remember(self, rows: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        for r in rows:
            key = (r.pop("pano_id"), r.pop("heading"))
            if key not in self._views:
                self._views[key] = future = loop.create_future()
                future.set_result(r)


async def _resolve(client: StreetViewClient, item: FetchItem, options: FetchOptions) -> tuple[Panorama, bool]:
    """The panorama of a place, and whether its pano id was refreshed. A pano id that no longer
    exists (ZERO_RESULTS / NOT_FOUND) is looked up once more by the place's coordinates, as
    Google's metadata document says to; NoImagery only when that finds nothing either."""
    location = (item.lat, item.lng)
    if not item.pano_id:
        return await client.metadata(location=location, source=options.source), False
    try:
        return await client.metadata(pano=item.pano_id), False
    except NoImagery as gone:
        first = gone.reason
    try:
        pano = await client.metadata(location=location, source=options.source)
    except NoImagery as exc:
        raise NoImagery(f"{first} by pano id, then {exc.reason} by location") from None
    except RequestFailed as exc:
        raise RequestFailed(f"{first} by pano id, then the location lookup: {exc.reason}") from None
    return pano, pano.pano_id != item.pano_id


async def _fetch_location(client: StreetViewClient, store: Store, shared: SharedViews, item: FetchItem, options: FetchOptions) -> _Outcome:
    """Metadata (and the refresh of a deleted id), then every missing heading by the pinned pano
    id, side by side: a place takes two round trips, not one per view, so few places keep the
    connections busy and the end of a batch does not trail off one view at a time. Blobs are
    written by the store threads as images arrive; rows come back once their blobs are safely
    stored. No image is requested before this place's own metadata answered OK: a refused key
    or signature stops the batch on free metadata requests, before any billed one."""
    asked = {"requested_pano_id": item.pano_id}
    try:
        try:
            pano, refreshed = await _resolve(client, item, options)
        except NoImagery as exc:
            return _Outcome([image_row(item.location_id, h, "no_imagery", options, "api", reason=exc.reason, **asked) for h in item.headings])
        except RequestFailed as exc:
            return _Outcome([
                image_row(item.location_id, h, "failed", options, "api", reason=exc.reason, pano_id=item.pano_id, **asked)
                for h in item.headings
            ])  # fmt: skip
    except Stopped:
        return _Outcome([])
    common = {
        "pano_id": pano.pano_id, "capture_date": pano.capture_date, "copyright": pano.copyright,
        "official": pano.official, "pano_lat": pano.lat, "pano_lng": pano.lng, **asked,
    }  # fmt: skip
    if options.official_only and not pano.official:
        rows = [image_row(item.location_id, h, "skipped", options, "api", reason=THIRD_PARTY_REASON, **common) for h in item.headings]
        return _Outcome(rows, refreshed=refreshed)
    await shared.load(pano.pano_id)
    views = await asyncio.gather(*(_fetch_view(client, store, shared, item, h, options, common) for h in item.headings), return_exceptions=True)
    outcome = _Outcome([], refreshed=refreshed)
    for view in views:
        if isinstance(view, FatalApiError):
            outcome.fatal = outcome.fatal or view
        elif isinstance(view, BaseException):  # Stopped: not requested; anything else is a bug or a failed write
            if not isinstance(view, Stopped):
                raise view
        else:
            row, reused = view
            outcome.rows.append(row)
            outcome.reused += reused
    return outcome


async def _fetch_view(
    client: StreetViewClient,
    store: Store,
    shared: SharedViews,
    item: FetchItem,
    heading: int,
    options: FetchOptions,
    common: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """The ``images`` row of one view (an ``ok`` row once its blob is written), and whether its
    bytes are another place's view of the same panorama (no request made)."""
    future, mine = shared.claim(common["pano_id"], heading)
    if not mine:
        got = await asyncio.shield(future)
        if isinstance(got, (FatalApiError, Stopped, asyncio.CancelledError)):
            raise Stopped()  # the place that made the request reports the refusal
        if isinstance(got, NoImagery):
            return image_row(item.location_id, heading, "no_imagery", options, "api", reason=got.reason, **common), False
        if isinstance(got, RequestFailed):
            return image_row(item.location_id, heading, "failed", options, "api", reason=got.reason, **common), False
        if isinstance(got, BaseException):
            raise got
        reason = f"same panorama, heading and view settings as place {got['location_id']}: its image, not requested again"
        blob = {k: got[k] for k in ("path", "sha256", "size_bytes")}
        return image_row(item.location_id, heading, "ok", options, "api", reason=reason, **blob, **common), True
    try:
        img = await client.image(common["pano_id"], heading, options.size, options.fov, options.pitch)
        path, sha256 = await store(img.data)
    except BaseException as exc:
        future.set_result(exc)  # a value, not raised: places that wait on it record the same outcome
        if isinstance(exc, NoImagery):
            return image_row(item.location_id, heading, "no_imagery", options, "api", reason=exc.reason, **common), False
        if isinstance(exc, RequestFailed):
            return image_row(item.location_id, heading, "failed", options, "api", reason=exc.reason, **common), False
        raise
    # width/height stay the size asked for (the view's key; Google serves exactly that size).
    blob = {"path": path, "sha256": sha256, "size_bytes": len(img.data)}
    future.set_result({**blob, "location_id": item.location_id})
    return image_row(item.location_id, heading, "ok", options, "api", **blob, **common), False


def fetch_batch(
    lake_uri: str,
    items: list[FetchItem],
    settings: Settings,
    options: FetchOptions,
    progress: Progress = NullProgress(),
) -> FetchStats:
    """Fetch the views of ``items`` and record them in the lake at ``lake_uri``.

    Up to ``options.concurrency`` requests in flight (coroutines on one event loop, see
    ``svcluster.tasks.fetch.client``), at most ``options.qps`` request starts per second. A refused key
    costs at most ``options.concurrency`` free metadata requests and no billed one. Raises
    FatalApiError (after writing the rows already finished) when the API refuses the key,
    signature or request. Callable from any thread, also one with a running event loop.
    """
    options = options.checked()
    if not items:
        return FetchStats()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_fetch_batch(lake_uri, items, settings, options, progress))
    # Called from async code (a running loop in this thread): run ours on a thread of its own.
    with ThreadPoolExecutor(1, thread_name_prefix="svcluster-fetch") as runner:
        return runner.submit(asyncio.run, _fetch_batch(lake_uri, items, settings, options, progress)).result()


async def _fetch_batch(lake_uri: str, items: list[FetchItem], settings: Settings, options: FetchOptions, progress: Progress) -> FetchStats:
    stats = FetchStats()
    lake = open_lake(lake_uri)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    secret = settings.signing_secret.get_secret_value() if settings.signing_secret else None
    stop = threading.Event()
    client = StreetViewClient(
        settings.streetview_url, key, secret,
        timeout=options.timeout, max_retries=options.max_retries, backoff_base=options.backoff_base,
        backoff_max=options.backoff_max, pool_size=options.concurrency, qps=options.qps, stop=stop,
    )  # fmt: skip
    writer = ImageRowWriter(lake, options.chunk_rows, options.flush_seconds)
    fatal: FatalApiError | None = None
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    shared = SharedViews(lake, options, lambda fn: run_query(fn))
    shared.preload([i.pano_id for i in items if i.pano_id])
    progress.start(sum(len(i.headings) for i in items), "fetching Street View images")
    # Blob writes (hash, write, fsync, rename) run on threads: the loop keeps serving requests.
    writers = STORE_THREADS_LOCAL if lake.is_local else STORE_THREADS_REMOTE
    store_pool = ThreadPoolExecutor(min(writers, options.concurrency), thread_name_prefix="svcluster-store")

    def store(data: bytes) -> Awaitable[tuple[str, str]]:
        return loop.run_in_executor(store_pool, lake.put_blob, data, "jpg")

    def run_query(fn: Callable[[], Any]) -> Awaitable[Any]:
        return loop.run_in_executor(store_pool, fn)

    # Locations in flight: enough to keep ``concurrency`` requests busy while some locations
    # wait for their metadata or their blobs.
    window = 2 * options.concurrency
    pending: set[asyncio.Task[_Outcome]] = set()
    finished: asyncio.Queue[asyncio.Task[_Outcome]] = asyncio.Queue()  # tasks, as they complete

    def start(item: FetchItem) -> None:
        task = asyncio.ensure_future(_fetch_location(client, store, shared, item, options))
        task.add_done_callback(finished.put_nowait)
        pending.add(task)

    try:
        queue_ = iter(items)
        top_up = True
        while top_up or pending:
            while top_up and not stop.is_set() and len(pending) < window:
                item = next(queue_, None)
                if item is None:
                    top_up = False
                    break
                start(item)
            if not pending:
                break
            # Wait for the next location to finish (or the flush timer); a queue fed by
            # done-callbacks costs O(1) per location where asyncio.wait() over every pending
            # task costs O(in flight).
            try:
                done = [await asyncio.wait_for(finished.get(), timeout=options.flush_seconds)]
            except asyncio.TimeoutError:
                done = []
            while not finished.empty():
                done.append(finished.get_nowait())
            for task in done:
                pending.discard(task)
                outcome = task.result()  # a failed blob write raises here
                stats.count(outcome.rows)
                stats.reused += outcome.reused
                stats.refreshed += outcome.refreshed
                writer.add(outcome.rows)
                progress.advance(len(outcome.rows))
                if outcome.fatal is not None and fatal is None:
                    fatal = outcome.fatal
                    stop.set()
            if not done:
                writer.add([])  # a time-based flush while requests are slow
    except BaseException:
        stop.set()  # locations not yet at a request return at once
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise
    finally:
        store_pool.shutdown(wait=True)
        await client.aclose()
        writer.flush()
        progress.finish()
        stats.metadata_requests = client.metadata_requests
        stats.image_requests = client.image_requests
        stats.requests = client.requests_made
        stats.elapsed_seconds = time.perf_counter() - started
    if fatal is not None:
        raise fatal
    return stats


def fetch_map(
    lake: Lake,
    map_name: str,
    settings: Settings,
    options: FetchOptions,
    progress: Progress = NullProgress(),
    verify: bool = False,
) -> FetchResult:
    """Fetch every missing or failed view of a map, then remove orphaned blobs.

    First the map's blobs are checked (``svcluster.tasks.lake.blob_check``): 'ok' views whose blob is gone
    (one listing) or, with ``verify``, whose bytes no longer match their sha256 are marked
    failed, and so fetched again in this run."""
    options = options.checked()
    check = check_map_blobs(lake, map_name, verify=verify)
    plan = plan_views(lake, map_name, options)
    record_map_views(lake, map_name, options)
    stats = fetch_batch(lake.uri, plan.items, settings, options, progress) if plan.items else FetchStats()
    stats.skipped = plan.skipped
    removed = gc_blobs(lake).removed if plan.items else 0
    return with_blob_check(result_of(map_name, "api", plan, stats, removed), check)


def record_map_views(lake: Lake, map_name: str, options: FetchOptions, source: str = "api") -> None:
    """Record what this fetch of ``map_name`` asks for (``map_views``): embed pools the map's
    views at these headings and settings only (options already checked)."""
    width, height = options.dimensions if source == "api" else (None, None)
    row = {
        "map": map_name, "headings": list(options.headings), "width": width, "height": height,
        "fov": options.fov, "pitch": options.pitch, "source": source,
    }  # fmt: skip
    lake.append("map_views", pa.Table.from_pylist([row], schema=MAP_VIEWS.schema))


def with_blob_check(result: FetchResult, check: BlobCheck) -> FetchResult:
    """``result`` with what the blob check before it found."""
    return replace(
        result, verified=check.verified, blobs_missing=check.missing, blobs_changed=check.changed,
        blobs_unreadable=check.unreadable,
    )  # fmt: skip


def result_of(map_name: str, source: str, plan: FetchPlan, stats: FetchStats, removed: int, unmatched: int = 0) -> FetchResult:
    elapsed = stats.elapsed_seconds
    return FetchResult(
        map=map_name,
        source=source,
        locations=plan.locations,
        views=plan.views,
        ok=stats.ok,
        no_imagery=stats.no_imagery,
        failed=stats.failed,
        skipped=stats.skipped,
        requests=stats.requests,
        metadata_requests=stats.metadata_requests,
        image_requests=stats.image_requests,
        elapsed_seconds=round(elapsed, 3),
        images_per_second=round(stats.ok / elapsed, 1) if elapsed > 0 else 0.0,
        failure_reasons=dict(sorted(stats.failure_reasons.items(), key=lambda kv: -kv[1])),
        orphan_blobs_removed=removed,
        unmatched_files=unmatched,
        third_party_skipped=stats.third_party_skipped,
        reused=stats.reused,
        refreshed=stats.refreshed,
    )


# ---- clean-up ------------------------------------------------------------------------------


def gc_blobs(lake: Lake, min_age_seconds: float = GC_MIN_AGE_SECONDS) -> GcResult:
    """Remove image blobs (``blobs/**.jpg``) that no ``images`` row refers to.

    Such orphans are left by a fetch killed between storing a blob and appending its row.
    Orphans younger than ``min_age_seconds`` are kept: they may belong to a fetch still
    running in another process, whose row is about to be written.
    """
    blobs = {p: t for p, t in lake.list_modified("blobs").items() if p.endswith(".jpg")}
    if not blobs:
        return GcResult(0, 0, 0)
    referenced = set(lake.query(load_sql("lake/image_blob_paths")).column("path").to_pylist())
    cutoff = time.time() - min_age_seconds
    removed = kept = 0
    for path, modified in blobs.items():
        if path in referenced:
            continue
        if modified > cutoff:
            kept += 1
            continue
        lake.delete(path)
        removed += 1
    if removed:
        log.info("removed %d orphaned blobs from %s", removed, redact(lake.uri))
    return GcResult(len(blobs), removed, kept)
