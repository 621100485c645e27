"""Embed: the 'ok' views of a map's locations through an image model, pooled per location.

Data in: the ``images`` table (one row per location and heading; 'ok' rows point at a JPEG blob).
Data out (appended, never edited):
  * ``embedding_views`` — one L2-normalised vector per view, with the image's sha256 and the
    model revision (mean pooling only), so views can be queried or re-pooled without the model;
  * ``embeddings`` — one L2-normalised vector per location, keyed by (location_id, model,
    pooling, precision), with ``view_count`` = the number of views it was made from.

Pooling rule. ``mean``: each 'ok' view is embedded on its own; the location's vector is the
mean of its normalised view vectors, re-normalised. ``stitched`` (the original notebook): the
'ok' views are placed side by side in heading order into one strip, which goes through the
model's processor (short side resized, center square cropped) as a single image. Views that are
``no_imagery`` or ``failed`` are left out: a location is pooled from the views it has and
records how many (``view_count``); a location with no 'ok' view gets no embedding. A rerun
embeds again a location whose number of 'ok' views changed since (e.g. a resumed fetch).

One bad image does not stop a map: a view whose blob is missing or cannot be decoded is left
out of its location's vector, and marked ``failed`` in ``images`` (a new row with the reason in
plain words, see ``svcluster.tasks.lake.blob_check``) so that the next ``svcluster fetch`` buys it again; the
run goes on and reports how many views failed.

Speed: blob reading, JPEG decoding and preprocessing run in a thread pool ahead of the model
(a bounded prefetch queue), the model runs batched under ``torch.inference_mode()``. On a CPU,
decoding and the model take turns on the cores (blob reads still overlap the model): the
model's threads run fastest with the cores to themselves, see ``ModelTurns``. Memory is
flat: work is streamed in batches of locations, and each batch is written (one append per table)
before the next is finished, so a crash loses at most one batch and a rerun resumes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from svcluster.sql import load_sql
from svcluster.tasks.lake.blob_check import DEFAULT_SETTINGS, BadView, mark_failed, missing_reason, unreadable_reason
from svcluster.tasks.errors import LakeError, NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Connection, Lake, open_lake
from svcluster.tasks.batches import chunked
from svcluster.tasks.fetch.step import check_angles, parse_size
from svcluster.tasks.embed.models import DEFAULT_MODEL, Embedder, choose_model, l2_normalise, load_embedder, model_revision
from svcluster.tasks.embed.precision_auto import PrecisionDecision, decide_precision
from svcluster.tasks.embed.preprocess import ImageDecodeError, decode_image, stitch_views
from svcluster.tasks.options import option
from svcluster.tasks.progress import NullProgress, Progress
from svcluster.tasks.lake.schemas import vector_type

log = logging.getLogger(__name__)

POOLINGS = ("mean", "stitched")
VIEWS_WINDOW = 2048  # locations whose views one query asks for (a window of consecutive batches)


def default_workers() -> int:
    """Decode/preprocess threads: one per core, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class EmbedOptions:
    """How to embed. ``batch_size`` counts model inputs (views, or strips when stitched);
    ``locations_per_batch`` is the unit of work written at once (and at most lost in a crash)."""

    model: str = option(DEFAULT_MODEL, "--model", "Hugging Face id, a local model folder, or 'baseline' (no weights).")
    pooling: str = option("mean", "--pooling", "mean: each view embedded, vectors averaged; stitched: the notebook's strip.")
    batch_size: int = option(32, "--batch-size", "Images per forward pass.")
    device: str = option("auto", "--device", "auto | cpu | cuda | mps (auto: cuda, then mps, then cpu).")
    precision: str = option("auto", "--precision", "auto | fp32 | bf16 | fp16 | int8 | int8-static (recorded with the vectors).")
    workers: int = option(
        default_factory=default_workers, flag="--workers", help="Threads decoding and preprocessing images.", flow=False
    )
    locations_per_batch: int = 32
    # Which views are pooled: those at these settings; each one not named is the map's own (its
    # latest fetch's, see ``map_view_settings``). `svcluster run` embeds what it fetched.
    size: str | None = option(None, "--size", "Embed the views of this size WIDTHxHEIGHT [default: the map's latest fetch's].", run=False)
    fov: float | None = option(None, "--fov", "Embed the views of this field of view [default: the map's latest fetch's].", run=False)
    pitch: float | None = option(None, "--pitch", "Embed the views of this pitch [default: the map's latest fetch's].", run=False)
    # All four as '640x640/fov90/pitch0' (``format_view_settings``): set by
    # ``with_map_view_settings`` from the above; given, it wins over them.
    view_settings: str | None = None
    # The headings pooled: the map's latest fetch's (``map_views``), set with ``view_settings``;
    # None pools every heading at those settings (a map fetched before headings were recorded).
    headings: tuple[int, ...] | None = None
    # What runs the model: auto (``precision.runtime_for``), torch or onnxruntime; set with the
    # precision by ``with_decided_precision`` when ``auto`` was measured (the faster fp32 runtime).
    runtime: str = "auto"

    def checked(self) -> "EmbedOptions":
        """These options, or SvclusterError naming the bad option."""
        self.validate()
        return self

    def validate(self) -> None:
        if self.pooling not in POOLINGS:
            raise SvclusterError(f"--pooling must be mean or stitched, not {self.pooling!r}")
        if self.batch_size < 1:
            raise SvclusterError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.runtime not in ("auto", "torch", "onnxruntime"):
            raise SvclusterError(f"runtime must be auto, torch or onnxruntime, not {self.runtime!r}")
        if self.workers < 1 or self.locations_per_batch < 1:
            raise SvclusterError("workers and locations_per_batch must be at least 1")
        if self.view_settings is not None:
            parse_view_settings(self.view_settings)
        if self.size is not None:
            parse_size(self.size)
        check_angles(self.fov, self.pitch)


_VIEW_SETTINGS = re.compile(r"(\d+)x(\d+)/fov(-?[0-9.]+)/pitch(-?[0-9.]+)")


def format_view_settings(width: int, height: int, fov: float, pitch: float) -> str:
    """The text form of a view's settings, as ``embeddings.view_settings`` records them."""
    return f"{int(width)}x{int(height)}/fov{float(fov):g}/pitch{float(pitch):g}"


def parse_view_settings(text: str) -> tuple[int, int, float, float]:
    """(width, height, fov, pitch) of ``format_view_settings``' text; SvclusterError otherwise."""
    match = _VIEW_SETTINGS.fullmatch(str(text).strip())
    if not match:
        raise SvclusterError(f"view settings must look like {DEFAULT_VIEW_SETTINGS!r}, not {text!r}")
    return int(match.group(1)), int(match.group(2)), float(match.group(3)), float(match.group(4))


DEFAULT_VIEW_SETTINGS = format_view_settings(*DEFAULT_SETTINGS)  # '640x640/fov90/pitch0'


def _settings_params(view_settings: str | None) -> dict[str, object]:
    text = view_settings or DEFAULT_VIEW_SETTINGS
    width, height, fov, pitch = parse_view_settings(text)
    return {"width": width, "height": height, "fov": fov, "pitch": pitch, "view_settings": format_view_settings(width, height, fov, pitch)}


def _size_fov_pitch(view_settings: str | None) -> dict[str, object]:
    params = _settings_params(view_settings)
    del params["view_settings"]
    return params


def map_view_settings(lake: Lake, map_name: str) -> str:
    """The view settings of a map's views that embed pools: what the map's latest fetch asked
    for (``map_views``), else (a lake fetched before that was recorded) the settings covering most
    of its places, the latest of equals (``sql/embed/map_settings.sql``); the default when the
    map has no 'ok' view."""
    rows = lake.query(load_sql("embed/map_settings"), {"map": map_name}).to_pylist()
    if not rows:
        return DEFAULT_VIEW_SETTINGS
    r = rows[0]
    width, height = (r["width"], r["height"]) if r["width"] is not None else DEFAULT_SETTINGS[:2]
    return format_view_settings(width, height, r["fov"], r["pitch"])


def with_map_view_settings(lake: Lake, map_name: str, options: "EmbedOptions") -> "EmbedOptions":
    """``options`` with ``view_settings`` and ``headings`` set: as given, else ``size``/``fov``/
    ``pitch`` where named and the map's own (``map_view_settings``) for the rest; the headings
    those of the map's latest fetch at the settings chosen (``sql/embed/map_headings.sql``).
    Settings already resolved are not looked up again."""
    if options.view_settings is not None:
        chosen = format_view_settings(*parse_view_settings(options.view_settings))
    else:
        named = (options.size, options.fov, options.pitch)
        width, height, fov, pitch = parse_view_settings(
            DEFAULT_VIEW_SETTINGS if all(v is not None for v in named) else map_view_settings(lake, map_name)
        )
        if options.size is not None:
            width, height = parse_size(options.size)
        fov = fov if options.fov is None else float(options.fov)
        pitch = pitch if options.pitch is None else float(options.pitch)
        chosen = format_view_settings(width, height, fov, pitch)
    headings = options.headings if options.headings is not None else map_headings(lake, map_name, chosen)
    return replace(options, view_settings=chosen, headings=headings)


def map_headings(lake: Lake, map_name: str, view_settings: str) -> tuple[int, ...] | None:
    """The headings the map's latest fetch at ``view_settings`` asked for, or None (not recorded)."""
    rows = lake.query(load_sql("embed/map_headings"), {"map": map_name, **_size_fov_pitch(view_settings)}).to_pylist()
    return tuple(sorted(rows[0]["headings"])) if rows and rows[0]["headings"] else None


def _headings_param(headings: tuple[int, ...] | None) -> dict[str, object]:
    """$headings of the embed queries: the headings pooled, or NULL for every heading."""
    return {"headings": None if headings is None else list(headings)}


@dataclass
class EmbedStats:
    """What one batch (or a whole run) did."""

    locations: int = 0  # embeddings written
    views_embedded: int = 0  # views that went through the model (stitched: views in the strips)
    views_reused: int = 0  # per-view vectors already in the lake, re-pooled
    model_inputs: int = 0  # forward-pass inputs (views, or strips when stitched)
    views_failed: int = 0  # views left out: blob missing or unreadable (marked failed in images)
    seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: "EmbedStats") -> None:
        self.locations += other.locations
        self.views_embedded += other.views_embedded
        self.views_reused += other.views_reused
        self.model_inputs += other.model_inputs
        self.views_failed += other.views_failed
        for reason, n in other.failure_reasons.items():
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + n


@dataclass
class EmbedResult:
    """What ``embed_map`` did, for the CLI summary and ``--json``."""

    map: str
    model: str
    model_revision: str | None
    pooling: str
    precision: str
    device: str
    runtime: str | None  # torch | onnxruntime | numpy; None when nothing needed embedding
    dim: int | None
    locations: int  # in the map
    locations_with_views: int  # with at least one 'ok' view
    locations_embedded: int  # written by this run
    locations_up_to_date: int  # already embedded before this run
    locations_without_views: int  # no 'ok' view: no embedding (the three kinds at the end)
    views_embedded: int
    views_reused: int
    seconds: float
    images_per_second: float
    locations_no_imagery: int = 0  # no 'ok' view because Street View has no imagery there: a fetch cannot help
    locations_fetch_failed: int = 0  # no 'ok' view because a view failed to fetch: a fetch retries it
    locations_not_fetched: int = 0  # nothing fetched yet: a fetch gets it
    views_failed: int = 0  # views whose blob was missing or unreadable: marked failed, not embedded
    failure_reasons: dict[str, int] = field(default_factory=dict)  # their kinds ("blob missing", ...)
    # How --precision auto was resolved, with the speeds and gate figures (None: forced, baseline).
    precision_decision: PrecisionDecision | None = None


def with_decided_precision(lake: Lake, map_name: str, options: EmbedOptions) -> tuple[EmbedOptions, PrecisionDecision | None]:
    """``options`` with ``auto`` replaced by the precision (and runtime) decided for this model
    and machine (``precision_auto``: measured on the map's views once, then cached), and the
    decision; unchanged with None when the precision is forced or the model is the baseline."""
    decision = decide_precision(lake, map_name, options)
    if decision is None:
        return options, None
    return replace(options, precision=decision.precision, runtime=decision.runtime), decision


@dataclass(frozen=True)
class _Job:
    """One model input: a view (mean) or all of a location's views as one strip (stitched)."""

    location_id: str
    headings: tuple[int, ...]
    paths: tuple[str, ...]
    settings: tuple[tuple[int, int, float, float], ...] = ()  # each view's (width, height, fov, pitch) as its row has them


@dataclass
class _Batch:
    """A batch of locations: their 'ok' views and the vectors known so far."""

    location_ids: list[str]
    views: dict[str, list[tuple[int, str]]]  # location -> [(heading, sha256)] in heading order
    vectors: dict[tuple[str, int], np.ndarray]  # (location, heading or -1 for a strip) -> vector
    new_views: set[tuple[str, int]]
    stats: EmbedStats
    failed: list[BadView] = field(default_factory=list)  # views whose blob could not be used


@dataclass(frozen=True)
class _Prepared:
    """A job's model input (None when none of its views could be used), the headings it holds,
    and the views left out because their blob is missing or unreadable."""

    array: np.ndarray | None
    headings: tuple[int, ...]
    failed: tuple[BadView, ...]


@dataclass(frozen=True)
class _BatchEnd:
    """Queued after a batch's last input: the batch can be pooled and written."""

    batch: _Batch


# ---- planning --------------------------------------------------------------------------------
def plan_embed(lake: Lake, map_name: str, options: EmbedOptions) -> list[list[str]]:
    """Batches of location_ids of ``map_name`` still lacking a vector for the options'
    model + pooling + precision from the views at ``options.view_settings`` (input order). Empty
    when everything is embedded (``view_settings`` None: the map's, ``with_map_view_settings``).
    Give ``embed_batch`` the same options with ``view_settings`` set the same way: it does not
    know the map, and without them pools the default 640x640/fov90/pitch0 views."""
    todo = _todo(lake, map_name, with_map_view_settings(lake, map_name, options))
    return chunked([loc for loc, _ in todo], options.locations_per_batch)


def _todo(lake: Lake, map_name: str, options: EmbedOptions) -> list[tuple[str, int]]:
    options.validate()
    choice = choose_model(options.model, options.device, options.precision)
    rows = lake.query(
        load_sql("embed/todo"),
        {
            "map": map_name,
            "model": choice.model,
            "pooling": options.pooling,
            "precision": choice.precision,
            "revision": model_revision(options.model),
            **_settings_params(options.view_settings),
            **_headings_param(options.headings),
        },
    )
    return list(zip(rows.column("location_id").to_pylist(), rows.column("views").to_pylist()))


# ---- running ---------------------------------------------------------------------------------
_load_lock = threading.Lock()


def get_embedder(options: EmbedOptions) -> Embedder:
    """The options' model, loaded once per process (thread-safe)."""
    with _load_lock:
        return load_embedder(options.model, options.device, options.precision, options.runtime)


def embed_batch(
    lake_uri: str, location_ids: list[str], options: EmbedOptions, progress: Progress = NullProgress()
) -> EmbedStats:
    """Embed one batch of locations into the lake at ``lake_uri`` (a batch of ``plan_embed``).

    Runs where it is called (a Prefect task, a Dask worker): the model is loaded there and cached
    for the process. Pools the views at ``options.view_settings`` (None: 640x640/fov90/pitch0). Calls ``progress.advance`` per image; starting the bar is the caller's job.
    """
    options.validate()
    lake = open_lake(lake_uri)
    embedder = get_embedder(options)
    total = EmbedStats()
    started = time.perf_counter()
    # Written in sub-batches of locations_per_batch: a crash inside a big batch loses little.
    for stats in run_embedding(lake, embedder, chunked(list(location_ids), options.locations_per_batch), options, progress):
        total.add(stats)
    total.seconds = time.perf_counter() - started
    return total


def embed_map(lake: Lake, map_name: str, options: EmbedOptions, progress: Progress = NullProgress()) -> EmbedResult:
    """Embed every location of ``map_name`` that lacks a vector (incremental, resumable)."""
    options.validate()
    options = with_map_view_settings(lake, map_name, options)
    summary = lake.query(load_sql("embed/map_summary"), {"map": map_name, **_size_fov_pitch(options.view_settings), **_headings_param(options.headings)}).to_pylist()[0]
    n_locations, with_views = summary["locations"] or 0, summary["with_views"] or 0
    if n_locations == 0:
        raise NotFoundError(f"map {map_name!r} is not in the lake at {lake.uri}; run `svcluster ingest` first")
    options, decision = with_decided_precision(lake, map_name, options)
    choice = choose_model(options.model, options.device, options.precision)
    todo = _todo(lake, map_name, options)
    started = time.perf_counter()
    stats = EmbedStats()
    revision, dim, runtime = None, None, None
    if todo:
        embedder = get_embedder(options)
        revision, dim, runtime = embedder.revision, embedder.dim, embedder.runtime
        progress.start(sum(v for _, v in todo), f"embedding {map_name} ({embedder.precision})")
        try:
            for s in run_embedding(lake, embedder, chunked([loc for loc, _ in todo], options.locations_per_batch), options, progress):
                stats.add(s)
        finally:
            progress.finish()
    seconds = time.perf_counter() - started
    images = stats.views_embedded
    return EmbedResult(
        map=map_name,
        model=choice.model,
        model_revision=revision,
        pooling=options.pooling,
        precision=choice.precision,
        device=choice.device,
        runtime=runtime,
        dim=dim,
        locations=n_locations,
        locations_with_views=with_views,
        locations_embedded=stats.locations,
        locations_up_to_date=with_views - len(todo),
        locations_without_views=n_locations - with_views,
        locations_no_imagery=summary["no_imagery"] or 0,
        locations_fetch_failed=summary["failed"] or 0,
        locations_not_fetched=summary["not_fetched"] or 0,
        views_embedded=stats.views_embedded,
        views_reused=stats.views_reused,
        views_failed=stats.views_failed,
        failure_reasons=dict(sorted(stats.failure_reasons.items(), key=lambda kv: -kv[1])),
        seconds=round(seconds, 3),
        images_per_second=round(images / seconds, 2) if seconds > 0 and images else 0.0,
        precision_decision=decision,
    )


class ModelTurns:
    """Decoding waits while the model runs on the same CPU cores.

    The model's intra-op threads occupy every core; a decoding thread running beside them
    preempts one, and the others wait for it at each of the model's parallel steps. Taking turns
    (all cores decode, then all cores run the model) gives more images/s (docs/embed.md, 'Speed
    and memory'). On a GPU the model does not use the CPU's cores: no turns there.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._idle = threading.Event()
        self._idle.set()

    def wait_for_cpu(self) -> None:
        """Called by a decoding thread before its CPU work: returns once the model is idle."""
        if self.enabled:
            self._idle.wait()

    def run(self, fn, *args):
        """Run the model: decoding threads hold off new work until it returns (or raises)."""
        if not self.enabled:
            return fn(*args)
        self._idle.clear()
        try:
            return fn(*args)
        finally:
            self._idle.set()


def run_embedding(
    lake: Lake,
    embedder: Embedder,
    batches: Iterable[list[str]],
    options: EmbedOptions,
    progress: Progress = NullProgress(),
) -> Iterator[EmbedStats]:
    """Embed batches of locations, yielding each batch's stats once it is written.

    A thread pool reads, decodes and preprocesses up to ``prefetch`` model inputs ahead of the
    model, across batch boundaries; the model runs in this thread on ``batch_size`` inputs at a
    time; a batch is pooled and appended as soon as its last input is through.
    """
    prefetch = max(2 * options.batch_size, 4 * options.workers)
    queue: deque[tuple[_Job, Future] | _BatchEnd] = deque()
    pending: list[tuple[_Job, np.ndarray]] = []
    stitched = options.pooling == "stitched"
    turns = ModelTurns(enabled=embedder.device == "cpu")

    def run_model() -> None:
        if not pending:
            return
        vectors = turns.run(embedder.embed, np.stack([arr for _, arr in pending]))
        for (job, _), vec in zip(pending, vectors):
            current = owner[job.location_id]
            current.vectors[(job.location_id, -1 if stitched else job.headings[0])] = vec
            current.stats.model_inputs += 1
            current.stats.views_embedded += len(job.headings)
        progress.advance(sum(len(job.headings) for job, _ in pending))
        pending.clear()

    owner: dict[str, _Batch] = {}
    # One DuckDB connection for the run: binding the lake's views is costly on S3.
    with lake.connect() as con, ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="embed-prep") as pool:
        try:
            for item in _work_items(con, embedder, batches, stitched, options.view_settings, options.headings):
                if isinstance(item, _Batch):  # a batch begins: its inputs follow
                    for loc in item.location_ids:
                        owner[loc] = item
                    if item.stats.views_reused:
                        progress.advance(item.stats.views_reused)
                    continue
                if isinstance(item, _BatchEnd):
                    queue.append(item)
                else:
                    queue.append((item, pool.submit(_prepare, lake, embedder, item, turns)))
                while len(queue) > prefetch:
                    yield from _drain_one(queue, pending, run_model, lake, embedder, options, owner, progress)
            while queue:
                yield from _drain_one(queue, pending, run_model, lake, embedder, options, owner, progress)
        finally:
            for entry in queue:
                if isinstance(entry, tuple):
                    entry[1].cancel()


def _drain_one(queue, pending, run_model, lake, embedder, options, owner, progress) -> Iterator[EmbedStats]:
    """Take the oldest queue entry: a prepared input (batched for the model) or a batch's end."""
    entry = queue.popleft()
    if isinstance(entry, _BatchEnd):
        # All of the batch's inputs are ahead of its end: run what is pending, then write it.
        run_model()
        started = time.perf_counter()
        stats = _write_batch(lake, embedder, entry.batch, options)
        stats.seconds = time.perf_counter() - started
        for loc in entry.batch.location_ids:
            owner.pop(loc, None)
        yield stats
        return
    job, future = entry
    prepared: _Prepared = future.result()
    if prepared.failed:
        batch = owner[job.location_id]
        batch.failed.extend(prepared.failed)
        batch.stats.views_failed += len(prepared.failed)
        for bad in prepared.failed:
            kind = bad.reason.split(":", 1)[0]
            batch.stats.failure_reasons[kind] = batch.stats.failure_reasons.get(kind, 0) + 1
        progress.advance(len(prepared.failed))  # done with: left out, not embedded
    if prepared.array is None:
        return
    pending.append((replace(job, headings=prepared.headings), prepared.array))
    if len(pending) >= options.batch_size:
        run_model()


def _work_items(
    con: Connection, embedder: Embedder, batches: Iterable[list[str]], stitched: bool, view_settings: str | None,
    headings: tuple[int, ...] | None = None,
) -> Iterator[_Job | _Batch | _BatchEnd]:
    """For each batch of locations: the batch (its views at ``view_settings`` and ``headings``,
    reusable vectors), its inputs, its end."""
    settings = {**_settings_params(view_settings), **_headings_param(headings)}
    for location_ids, rows in _views_of_batches(con, embedder, batches, settings):
        batch = _Batch(location_ids=[], views={}, vectors={}, new_views=set(), stats=EmbedStats())
        jobs: list[_Job] = []
        by_location: dict[str, list[tuple[int, str, str]]] = {}
        keys: dict[tuple[str, int], tuple[int, int, float, float]] = {}  # a view's settings, as its row has them
        columns = ("location_id", "heading", "path", "sha256", "vector", "width", "height", "fov", "pitch")
        for loc, heading, path, sha, vector, *key in zip(*(rows.column(c).to_pylist() for c in columns)):
            by_location.setdefault(loc, []).append((heading, path, sha))
            keys[(loc, heading)] = (int(key[0]), int(key[1]), float(key[2]), float(key[3]))
            if not stitched and vector is not None:
                batch.vectors[(loc, heading)] = np.asarray(vector, dtype=np.float32)
                batch.stats.views_reused += 1
        for loc in location_ids:
            views = by_location.get(loc)
            if not views:
                continue  # no 'ok' view (any more): no embedding
            batch.location_ids.append(loc)
            batch.views[loc] = [(h, sha) for h, _, sha in views]
            if stitched:
                jobs.append(_Job(loc, tuple(h for h, _, _ in views), tuple(p for _, p, _ in views), tuple(keys[(loc, h)] for h, _, _ in views)))
            else:
                for h, p, _ in views:
                    if (loc, h) not in batch.vectors:
                        jobs.append(_Job(loc, (h,), (p,), (keys[(loc, h)],)))
                        batch.new_views.add((loc, h))
        yield batch
        yield from jobs
        yield _BatchEnd(batch)


def _views_of_batches(
    con: Connection, embedder: Embedder, batches: Iterable[list[str]], settings: dict[str, object]
) -> Iterator[tuple[list[str], pa.Table]]:
    """Each batch with its rows of ``sql/embed/views.sql`` and a ``vector`` column (the reusable
    vector, else null), asked for ``VIEWS_WINDOW`` locations of consecutive batches at a time: a
    query scans the tables whole, so asking per batch made each batch's cost grow with the lake.
    Vectors are read only for the locations that have one to reuse."""
    window: list[list[str]] = []
    keys = {"model": embedder.model, "precision": embedder.precision, "revision": embedder.revision}

    def flush() -> Iterator[tuple[list[str], pa.Table]]:
        ids = [loc for b in window for loc in b]
        rows = con.sql(load_sql("embed/views"), params={"ids": ids, **keys, **settings}).to_arrow_table()
        rows = rows.append_column("vector", _reusable_vectors(con, rows, {**keys, "view_settings": settings["view_settings"]}))
        column = rows.column("location_id")
        for b in window:
            yield b, rows.filter(pc.is_in(column, value_set=pa.array(b, pa.string())))
        window.clear()

    for location_ids in batches:
        window.append(list(location_ids))
        if sum(map(len, window)) >= VIEWS_WINDOW:
            yield from flush()
    if window:
        yield from flush()


def _reusable_vectors(con: Connection, rows: pa.Table, params: dict[str, object]) -> pa.Array:
    """For each row of ``sql/embed/views.sql``: its reusable vector (``sql/embed/view_vectors.sql``),
    else null."""
    reusable = rows.column("reusable")
    if not pc.any(reusable).as_py():
        return pa.nulls(rows.num_rows, pa.list_(pa.float32()))
    ids = pc.unique(rows.filter(reusable).column("location_id")).to_pylist()
    found = con.sql(load_sql("embed/view_vectors"), params={"ids": ids, **params}).to_arrow_table()
    at = {k: i for i, k in enumerate(zip(*(found.column(c).to_pylist() for c in ("location_id", "heading", "image_sha256"))))}
    wanted = zip(*(rows.column(c).to_pylist() for c in ("location_id", "heading", "sha256", "reusable")))
    picks = [at.get((loc, heading, sha)) if ok else None for loc, heading, sha, ok in wanted]
    return found.column("vector").combine_chunks().cast(pa.list_(pa.float32())).take(pa.array(picks, pa.int64()))


def _prepare(lake: Lake, embedder: Embedder, job: _Job, turns: ModelTurns) -> _Prepared:
    """Read, decode (and stitch) a job's images and turn them into the model's input.

    The blobs are read first (I/O overlaps the model); the decoding waits for its turn. A view
    whose blob is missing or does not decode is left out (and reported); a lake that cannot be
    reached raises."""
    failed: list[BadView] = []
    blobs = []
    key = dict(zip(job.headings, job.settings))
    for h, p in zip(job.headings, job.paths):
        data = _read_blob(lake, p)
        if data is None:
            failed.append(BadView(job.location_id, h, missing_reason(p), key.get(h, DEFAULT_SETTINGS)))
        else:
            blobs.append((h, data))
    turns.wait_for_cpu()
    images, used = [], []
    for h, data in blobs:
        try:
            images.append(decode_image(data, "blob"))
        except ImageDecodeError as exc:
            failed.append(BadView(job.location_id, h, unreadable_reason(exc.problem), key.get(h, DEFAULT_SETTINGS)))
            continue
        used.append(h)
    if not images:
        return _Prepared(None, (), tuple(failed))
    img = images[0] if len(images) == 1 else stitch_views(images)
    return _Prepared(embedder.prepare(img), tuple(used), tuple(failed))


def _read_blob(lake: Lake, path: str) -> bytes | None:
    """A blob's bytes, or None when it is not in the lake (any other storage error raises)."""
    try:
        return lake.read_bytes(path)
    except LakeError:
        if lake.exists(path):
            raise
        return None


def _write_batch(lake: Lake, embedder: Embedder, batch: _Batch, options: EmbedOptions) -> EmbedStats:
    """Pool and append a finished batch: per-view vectors first, then the location vectors."""
    stitched = options.pooling == "stitched"
    dim = embedder.dim
    view_settings = _settings_params(options.view_settings)["view_settings"]
    if batch.failed:  # left out of the vectors; the next fetch buys them again
        mark_failed(lake, batch.failed)
        gone = {(b.location_id, b.heading) for b in batch.failed}
        for loc in batch.location_ids:
            batch.views[loc] = [(h, sha) for h, sha in batch.views[loc] if (loc, h) not in gone]
        batch.new_views -= gone
        batch.location_ids = [loc for loc in batch.location_ids if batch.views[loc]]
        if stitched:  # a strip none of whose views decoded has no vector
            batch.location_ids = [loc for loc in batch.location_ids if (loc, -1) in batch.vectors]
    if not stitched and batch.new_views:
        keys = [(loc, h, sha) for loc in batch.location_ids for h, sha in batch.views[loc] if (loc, h) in batch.new_views]
        lake.append(
            "embedding_views",
            pa.table(
                {
                    "location_id": [k[0] for k in keys],
                    "heading": pa.array([k[1] for k in keys], pa.int32()),
                    "model": [embedder.model] * len(keys),
                    "precision": [embedder.precision] * len(keys),
                    "vector": _vectors([batch.vectors[(k[0], k[1])] for k in keys], dim),
                    "image_sha256": [k[2] for k in keys],
                    "model_revision": [embedder.revision] * len(keys),
                    "view_settings": [view_settings] * len(keys),
                }
            ),
        )
    pooled, counts = [], []
    for loc in batch.location_ids:
        views = batch.views[loc]
        if stitched:
            pooled.append(batch.vectors[(loc, -1)])
        else:
            pooled.append(pool_views(np.stack([batch.vectors[(loc, h)] for h, _ in views])))
        counts.append(len(views))
    n = len(batch.location_ids)
    if n:
        lake.append(
            "embeddings",
            pa.table(
                {
                    "location_id": batch.location_ids,
                    "model": [embedder.model] * n,
                    "pooling": [options.pooling] * n,
                    "precision": [embedder.precision] * n,
                    "vector": _vectors(pooled, dim),
                    "dim": pa.array([dim] * n, pa.int32()),
                    "view_count": pa.array(counts, pa.int32()),
                    "model_revision": [embedder.revision] * n,
                    "view_settings": [view_settings] * n,
                }
            ),
        )
    batch.stats.locations = n
    return batch.stats


def pool_views(view_vectors: np.ndarray) -> np.ndarray:
    """Mean pooling: the mean of L2-normalised view vectors ``(n, dim)``, re-normalised."""
    return l2_normalise(l2_normalise(view_vectors).mean(axis=0, keepdims=True))[0]


def _vectors(rows: list[np.ndarray], dim: int) -> pa.Array:
    flat = np.ascontiguousarray(np.stack(rows).astype(np.float32)).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim).cast(vector_type(dim))
