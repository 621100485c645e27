"""The fetch step: Street View images of a map's locations into the lake, resumably.

Per location: one free metadata request (``pano=`` when the location has a pano id — from an
earlier fetch of this location, else from the map — otherwise ``location=``) pins the panorama;
then one billed image request per missing heading, by that pano id, so every view of a
location comes from the same panorama. What happens is recorded per (location, heading) in
the ``images`` table: ``ok`` (bytes stored as received in a content-addressed blob),
``no_imagery`` (metadata ZERO_RESULTS / NOT_FOUND: no image request spent) or ``failed`` with
the reason (after retries). A refused key or request raises :class:`FatalApiError` at once.

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

from sql import load_sql
from tasks.errors import NotFoundError, SvclusterError
from tasks.lake import Lake, open_lake
from tasks.progress import NullProgress, Progress
from tasks.schemas import IMAGES
from tasks.settings import Settings
from tasks.streetview import (
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
# the GIL from the loop: 8 threads cost ~60 % more system CPU than 2 for the same images), many
# on S3, where a write is a request of tens of milliseconds.
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
    "fetch_batch",
    "fetch_map",
    "gc_blobs",
    "plan_fetch",
    "plan_views",
    "replan_batch",
]


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: which views, how fast, how patiently. Picklable; validate with ``checked()``.

    ``qps`` 0 lifts the rate limit. ``backoff_base``/``backoff_max`` bound the full-jitter
    exponential backoff between retries (seconds). ``chunk_rows``/``flush_seconds`` bound how
    much work a kill can lose.
    """

    headings: tuple[int, ...] = (0, 90, 180, 270)
    size: str = "640x640"
    fov: float = 90.0
    pitch: float = 0.0
    concurrency: int = 16
    qps: float = 100.0
    timeout: float = 30.0
    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    chunk_rows: int = 1000
    flush_seconds: float = 10.0

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
        match = re.fullmatch(r"(\d+)x(\d+)", str(self.size).strip().lower())
        if not match or not all(1 <= int(s) <= MAX_SIDE for s in match.groups()):
            raise SvclusterError(f"--size must be WIDTHxHEIGHT with sides from 1 to {MAX_SIDE}, not {self.size!r}")
        if not 10 <= self.fov <= 120:
            raise SvclusterError(f"--fov must be from 10 to 120 degrees, not {self.fov:g}")
        if not -90 <= self.pitch <= 90:
            raise SvclusterError(f"--pitch must be from -90 to 90 degrees, not {self.pitch:g}")
        if not 1 <= self.concurrency <= 512:
            raise SvclusterError(f"--concurrency must be from 1 to 512, not {self.concurrency}")
        if self.qps < 0:
            raise SvclusterError(f"--qps must be 0 (unlimited) or more, not {self.qps:g}")
        if self.timeout <= 0 or self.max_retries < 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise SvclusterError("timeout must be positive; retries and backoff cannot be negative")
        if self.chunk_rows < 1 or self.flush_seconds <= 0:
            raise SvclusterError("--chunk-rows must be at least 1 and flush_seconds positive")
        size = f"{int(match.group(1))}x{int(match.group(2))}"
        return replace(self, headings=tuple(headings), size=size, fov=float(self.fov), pitch=float(self.pitch))


@dataclass(frozen=True)
class FetchItem:
    """One location with the headings it still needs and the panorama to ask for.

    ``pano_id`` is the panorama an earlier fetch pinned for this location, else the map's
    panoId, else None (the metadata endpoint is asked by ``lat,lng``).
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

    ok: int = 0
    no_imagery: int = 0
    failed: int = 0
    skipped: int = 0  # views already ok / no_imagery in the lake: nothing requested
    requests: int = 0
    metadata_requests: int = 0
    image_requests: int = 0
    elapsed_seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def count(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            setattr(self, r["status"], getattr(self, r["status"]) + 1)
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
    locations: int
    views: int  # locations x headings wanted
    ok: int
    no_imagery: int
    failed: int
    skipped: int
    requests: int
    metadata_requests: int
    image_requests: int
    elapsed_seconds: float
    images_per_second: float
    failure_reasons: dict[str, int]
    orphan_blobs_removed: int = 0
    unmatched_files: int = 0  # folder import: files that match no wanted (location, heading)
    missing_files: int = 0  # folder import: views still missing that the folder has no file for


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
        """Views already ok or no_imagery in the lake."""
        return self.views - sum(len(i.headings) for i in self.items)


# ---- planning ------------------------------------------------------------------------------


def plan_views(lake: Lake, map_name: str, options: FetchOptions) -> FetchPlan:
    """The plan of ``plan_fetch`` with the map's totals (options already checked)."""
    rows = lake.query(load_sql("fetch_plan"), {"map": map_name, "headings": list(options.headings)}).to_pylist()
    if not rows:
        raise NotFoundError(f"map {map_name!r} has no locations in the lake at {lake.uri}; run `svcluster ingest` first")
    items = [
        FetchItem(r["location_id"], r["position"], r["lat"], r["lng"], r["pano_id"], tuple(r["headings"]))
        for r in rows
        if r["headings"]
    ]
    return FetchPlan(items, len(rows), len(rows) * len(options.headings), frozenset(r["position"] for r in rows))


def replan_batch(lake: Lake, items: list[FetchItem]) -> list[FetchItem]:
    """``items`` without the views the lake now has (``ok``/``no_imagery``), on the panorama an
    earlier attempt pinned: what a retried batch still has to fetch, so that no view its failed
    attempt already stored is requested (and billed) again."""
    if not items:
        return []
    rows = lake.query(load_sql("fetch_batch_done"), {"ids": [i.location_id for i in items]}).to_pylist()
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
    """The locations of a map with views still missing or failed, in input order."""
    return plan_views(lake, map_name, options.checked()).items


# ---- writing -------------------------------------------------------------------------------


class ImageRowWriter:
    """Buffers ``images`` rows and appends them one chunk per Parquet file: when ``chunk_rows``
    are waiting or ``flush_seconds`` have passed since the last append."""

    def __init__(self, lake: Lake, chunk_rows: int, flush_seconds: float):
        self.lake, self.chunk_rows, self.flush_seconds = lake, chunk_rows, flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()
        self.appended = 0

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
        self.appended += len(rows)


_IMAGE_COLUMNS = tuple(IMAGES.schema.names)


def image_row(location_id: str, heading: int, status: str, options: FetchOptions, source: str, **values: Any) -> dict[str, Any]:
    """One ``images`` row (columns not given are null)."""
    row = dict.fromkeys(_IMAGE_COLUMNS)
    row.update(location_id=location_id, heading=heading, status=status, fov=options.fov, pitch=options.pitch, source=source)
    row.update(values)
    return row


# ---- fetching ------------------------------------------------------------------------------


@dataclass
class _Outcome:
    rows: list[dict[str, Any]]
    fatal: FatalApiError | None = None


async def _fetch_location(
    client: StreetViewClient,
    store: Callable[[bytes], Awaitable[tuple[str, str]]],
    item: FetchItem,
    options: FetchOptions,
) -> _Outcome:
    """Metadata, then every missing heading by the pinned pano id, side by side: a location
    takes two round trips, not one per view, so few locations keep the connections busy and
    the end of a batch does not trail off one view at a time. Blobs are written by the store
    threads as images arrive; rows come back once their blobs are safely stored. No image is
    requested before this location's own metadata answered OK: a refused key or signature
    stops the batch on free metadata requests, before any billed one."""
    try:
        try:
            if item.pano_id:
                pano: Panorama = await client.metadata(pano=item.pano_id)
            else:
                pano = await client.metadata(location=(item.lat, item.lng))
        except NoImagery as exc:
            return _Outcome([image_row(item.location_id, h, "no_imagery", options, "api", reason=exc.reason, pano_id=item.pano_id) for h in item.headings])
        except RequestFailed as exc:
            return _Outcome([image_row(item.location_id, h, "failed", options, "api", reason=exc.reason, pano_id=item.pano_id) for h in item.headings])
    except Stopped:
        return _Outcome([])
    common = {"pano_id": pano.pano_id, "capture_date": pano.capture_date}
    views = await asyncio.gather(*(_fetch_view(client, store, item, h, options, common) for h in item.headings), return_exceptions=True)
    rows: list[dict[str, Any]] = []
    fatal: FatalApiError | None = None
    for view in views:
        if isinstance(view, FatalApiError):
            fatal = fatal or view
        elif isinstance(view, BaseException):  # Stopped: not requested; anything else is a bug or a failed write
            if not isinstance(view, Stopped):
                raise view
        else:
            rows.append(view)
    return _Outcome(rows, fatal)


async def _fetch_view(
    client: StreetViewClient,
    store: Callable[[bytes], Awaitable[tuple[str, str]]],
    item: FetchItem,
    heading: int,
    options: FetchOptions,
    common: dict[str, Any],
) -> dict[str, Any]:
    """The ``images`` row of one view; an ``ok`` row once its blob is written."""
    try:
        img = await client.image(common["pano_id"], heading, options.size, options.fov, options.pitch)
    except NoImagery as exc:
        return image_row(item.location_id, heading, "no_imagery", options, "api", reason=exc.reason, **common)
    except RequestFailed as exc:
        return image_row(item.location_id, heading, "failed", options, "api", reason=exc.reason, **common)
    path, sha256 = await store(img.data)
    return image_row(
        item.location_id, heading, "ok", options, "api",
        size_bytes=len(img.data), width=img.width, height=img.height, path=path, sha256=sha256, **common,
    )  # fmt: skip


def fetch_batch(
    lake_uri: str,
    items: list[FetchItem],
    settings: Settings,
    options: FetchOptions,
    progress: Progress = NullProgress(),
) -> FetchStats:
    """Fetch the views of ``items`` and record them in the lake at ``lake_uri``.

    Up to ``options.concurrency`` requests in flight (coroutines on one event loop, see
    ``tasks.streetview``), at most ``options.qps`` request starts per second. A refused key
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
    progress.start(sum(len(i.headings) for i in items), "fetching Street View images")
    # Blob writes (hash, write, fsync, rename) run on threads: the loop keeps serving requests.
    writers = STORE_THREADS_LOCAL if lake.is_local else STORE_THREADS_REMOTE
    store_pool = ThreadPoolExecutor(min(writers, options.concurrency), thread_name_prefix="svcluster-store")

    def store(data: bytes) -> Awaitable[tuple[str, str]]:
        return loop.run_in_executor(store_pool, lake.put_blob, data, "jpg")

    # Locations in flight: enough to keep ``concurrency`` requests busy while some locations
    # wait for their metadata or their blobs.
    window = 2 * options.concurrency
    pending: set[asyncio.Task[_Outcome]] = set()
    finished: asyncio.Queue[asyncio.Task[_Outcome]] = asyncio.Queue()  # tasks, as they complete

    def start(item: FetchItem) -> None:
        task = asyncio.ensure_future(_fetch_location(client, store, item, options))
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
) -> FetchResult:
    """Fetch every missing or failed view of a map, then remove orphaned blobs."""
    options = options.checked()
    plan = plan_views(lake, map_name, options)
    stats = fetch_batch(lake.uri, plan.items, settings, options, progress) if plan.items else FetchStats()
    stats.skipped = plan.skipped
    removed = gc_blobs(lake).removed if plan.items else 0
    return result_of(map_name, "api", plan, stats, removed)


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
    referenced = set(lake.query(load_sql("image_blob_paths")).column("path").to_pylist())
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
