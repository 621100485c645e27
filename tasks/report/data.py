"""What a run's report shows, gathered from the lake (SQL in ``sql/report_*.sql``) and computed
with numpy: the points of the map, a summary per cluster, far-apart look-alikes, comparisons,
the k-sweep and the thumbnails of the sampled views."""

from __future__ import annotations

import base64
import io
import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from svcluster.sql import load_sql
from svcluster.tasks.cluster.compare import Comparison, compare_runs, compare_with_tags
from svcluster.tasks.errors import LakeError, NotFoundError, SvclusterError
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.cluster.naming import RunVectors, cluster_names, load_run_vectors
from svcluster.tasks.progress import NullProgress, Progress
from svcluster.tasks.links import street_view_url
from svcluster.tasks.report.geo import cluster_color, cluster_marker, geographic_centroid, haversine_km
from svcluster.tasks.cluster.runs import RunRef, previous_version
from svcluster.tasks.report.atlas import AtlasData, gather_atlas
from svcluster.tasks.report.regions import region_countries

THUMB_PX = 160
THUMB_QUALITY = 72
MAX_VIEWS_PER_LOCATION = 4
MAX_SAMPLE_LOCATIONS = 480
LOOKALIKE_CANDIDATES = 400
LOOKALIKES_PER_CLUSTER = 3
LOOKALIKES_SHOWN = 12
COMPARE_SOURCE = "svcluster.tasks.cluster.compare"  # the code every comparison of the report comes from
OUTLIERS_SHOWN = 12
DUPLICATES_SHOWN = 12
LINEAGE_ROWS = 400
NOISE_COLOR = "#9e9e9e"  # HDBSCAN's noise (cluster -1): grey, listed after the clusters
NOISE_NAME = "noise: in no cluster (HDBSCAN)"


@dataclass
class Points:
    """Every location of the run, as columns (sorted by cluster, nearest the centroid first)."""

    location_ids: list[str]
    cluster: np.ndarray  # int32
    distance: np.ndarray  # float32, NaN when unknown
    lat: np.ndarray
    lng: np.ndarray
    region: list[str]  # region code, else country code, else "unknown"
    tags: list[list[str]]
    region_countries: set[str] = field(default_factory=set)  # where the map has 2+ region codes (regions.py)

    def __len__(self) -> int:
        return len(self.location_ids)


@dataclass
class ClusterSummary:
    """One cluster at a glance."""

    cluster: int
    color: str
    size: int
    share: float
    names: list[str]
    spread_km: float  # median distance of its locations to its geographic centroid
    centroid: tuple[float, float]
    regions: list[tuple[str, float]]  # dominant regions and their share of the cluster
    tags: list[tuple[str, float]]  # the map's own tags most common in the cluster
    typical: list[str]  # location ids nearest the centroid
    edges: list[str]  # location ids farthest from the centroid
    marker: str = "circle"  # the second visual cue past 20 clusters (report_geo.MARKERS)


@dataclass
class LookAlike:
    """Two locations of one cluster, far apart yet similar."""

    cluster: int
    a: str
    b: str
    km: float
    similarity: float


@dataclass
class ComparisonLine:
    """One line of the report's comparisons: a ``svcluster.tasks.cluster.compare.Comparison``
    reduced to what the page shows, or (``note``) why it could not be made."""

    against: str  # a run name, or "the map's tags"
    kind: str  # previous | tags
    locations: int
    ari: float | None
    nmi: float | None
    source: str  # which code computed it (svcluster.tasks.cluster.compare)
    note: str = ""


@dataclass
class SweepPoint:
    run_id: str
    name: str
    k: int
    inertia: float | None
    silhouette: float | None


@dataclass
class View:
    """A downscaled view of a sampled location, as a data URI, and where it was taken: the
    panorama and camera it shows (``street_view_url`` opens the same view in Google Maps)."""

    heading: int
    src: str
    capture_date: str | None
    pano_id: str | None = None
    lat: float | None = None
    lng: float | None = None
    pitch: float | None = None
    fov: float | None = None

    @property
    def url(self) -> str:
        return street_view_url(self.lat, self.lng, self.pano_id, self.heading, self.pitch, self.fov)


@dataclass
class Outlier:
    """A place far out of its cluster (``cluster_outliers``): its distance over the cluster's median."""

    location_id: str
    cluster: int
    relative_distance: float
    rank_in_run: int


@dataclass
class DuplicatePair:
    """Two places with near-identical embeddings and different panoramas (``duplicate_panoramas``)."""

    cluster: int
    a: str
    b: str
    cosine: float
    km: float | None


@dataclass
class Shape:
    """The run's outliers and duplicate panoramas (the first of each, and how many in all) and
    its lineage rows with the neighbouring k of its sweep."""

    outliers: list[Outlier] = field(default_factory=list)
    outliers_total: int = 0
    duplicates: list[DuplicatePair] = field(default_factory=list)
    duplicates_total: int = 0
    lineage: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ReportData:
    """Everything the page and the PNG draw."""

    ref: RunRef
    run: dict[str, Any]
    params: dict[str, Any]
    points: Points
    clusters: list[ClusterSummary]
    lookalikes: list[LookAlike]
    lookalike_note: str
    comparisons: list[ComparisonLine]
    sweep: list[SweepPoint]
    naming_note: str
    views: dict[str, list[View]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    shape: Shape = field(default_factory=Shape)
    atlas: AtlasData | None = None  # the 2-D map of the embedding space (tasks/report/atlas.py)
    atlas_note: str = ""


# ---- points ------------------------------------------------------------------------------
def load_points(lake: Lake, run_id: str) -> Points:
    t = lake.query(load_sql("report/points"), {"run": run_id})
    region_codes, country_codes = t.column("region_code").to_pylist(), t.column("country_code").to_pylist()
    region = [r or c or "unknown" for r, c in zip(region_codes, country_codes)]
    dist = t.column("distance").to_numpy(zero_copy_only=False)
    return Points(
        location_ids=t.column("location_id").to_pylist(),
        cluster=t.column("cluster").to_numpy(zero_copy_only=False).astype(np.int32),
        distance=np.asarray([np.nan if v is None else v for v in dist], np.float32) if dist.dtype == object else dist.astype(np.float32),
        lat=t.column("lat").to_numpy(zero_copy_only=False).astype(np.float64),
        lng=t.column("lng").to_numpy(zero_copy_only=False).astype(np.float64),
        region=region,
        tags=[list(x) if x else [] for x in t.column("tags").to_pylist()],
        region_countries=region_countries(country_codes, region_codes),
    )


# ---- clusters ----------------------------------------------------------------------------
def summarise_clusters(
    points: Points, names: dict[int, list[str]], typicality: np.ndarray | None, n_typical: int, n_edges: int
) -> list[ClusterSummary]:
    """Per cluster: size, spread, dominant regions and tags, typical and edge locations.

    ``typicality`` (cosine to the cluster centroid, per point) orders the samples when known;
    otherwise the run's own distance to centroid does.
    """
    out = []
    n = len(points)
    ids = np.unique(points.cluster)
    order_key = -typicality if typicality is not None else np.nan_to_num(points.distance, nan=np.inf)
    ids = np.r_[ids[ids >= 0], ids[ids < 0]]  # HDBSCAN's noise (-1) last, in grey
    for i, c in enumerate(ids):
        idx = np.flatnonzero(points.cluster == c)
        lat, lng = points.lat[idx], points.lng[idx]
        clat, clng = geographic_centroid(lat, lng)
        spread = float(np.median(haversine_km(lat, lng, clat, clng)))
        regions = Counter(points.region[j] for j in idx).most_common(3)
        tags = Counter(t for j in idx for t in set(points.tags[j])).most_common(3)
        ranked = idx[np.argsort(order_key[idx], kind="stable")]
        typical = ranked[:n_typical]
        edges = ranked[max(len(typical), len(ranked) - n_edges):][::-1]
        out.append(
            ClusterSummary(
                cluster=int(c),
                color=cluster_color(i) if c >= 0 else NOISE_COLOR,
                marker=cluster_marker(i) if c >= 0 else "circle",
                size=len(idx),
                share=len(idx) / n if n else 0.0,
                names=names.get(int(c), []) if c >= 0 else [NOISE_NAME],
                spread_km=round(spread, 1),
                centroid=(round(clat, 4), round(clng, 4)),
                regions=[(r, round(k / len(idx), 3)) for r, k in regions],
                tags=[(t, round(k / len(idx), 3)) for t, k in tags],
                typical=[points.location_ids[j] for j in typical],
                edges=[points.location_ids[j] for j in edges],
            )
        )
    return out


def typicality_of(points: Points, vectors: RunVectors) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(cosine of each point to its cluster centroid, each point's row in ``vectors``)."""
    if not vectors.location_ids:
        return None, None
    row = {lid: i for i, lid in enumerate(vectors.location_ids)}
    rows = np.asarray([row.get(lid, -1) for lid in points.location_ids], np.int64)
    if (rows < 0).any():
        return None, None
    v = vectors.vectors[rows]
    typ = np.empty(len(points), np.float32)
    for c in np.unique(points.cluster):
        idx = np.flatnonzero(points.cluster == c)
        centre = v[idx].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        typ[idx] = v[idx] @ centre
    return typ, rows


# ---- far-apart look-alikes ---------------------------------------------------------------
def candidate_rows(lat: np.ndarray, lng: np.ndarray, typ: np.ndarray, limit: int) -> np.ndarray:
    """Members of one cluster worth pairing: the most typical ones, plus the most typical of each
    geographic grid cell (so far-flung corners are represented). Indices into the arrays."""
    n = len(lat)
    if n <= limit:
        return np.arange(n)
    by_typ = np.argsort(-typ, kind="stable")
    span = max(float(lat.max() - lat.min()), float(lng.max() - lng.min()), 1e-3)
    cell = span / 12
    key = np.floor(lat / cell).astype(np.int64) * 1_000_003 + np.floor(lng / cell).astype(np.int64)
    order = np.lexsort((-typ, key))
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    second = np.r_[False, first[:-1]] & ~first
    per_cell = order[first | second]
    per_cell = per_cell[np.argsort(-typ[per_cell], kind="stable")][: limit // 2]
    chosen = np.unique(np.concatenate([per_cell, by_typ[: limit - len(per_cell)]]))
    return chosen[:limit]


def find_lookalikes(points: Points, vectors: np.ndarray, rows: np.ndarray, typ: np.ndarray) -> list[LookAlike]:
    """Per cluster, pairs in the top 10% of similarity among candidates, farthest apart first.

    Cost is O(candidates^2) per cluster (at most 400^2), never O(n^2).
    """
    found: list[LookAlike] = []
    for c in np.unique(points.cluster):
        idx = np.flatnonzero(points.cluster == c)
        if len(idx) < 2:
            continue
        cand = idx[candidate_rows(points.lat[idx], points.lng[idx], typ[idx], LOOKALIKE_CANDIDATES)]
        v = vectors[rows[cand]]
        sim = v @ v.T
        km = haversine_km(points.lat[cand][:, None], points.lng[cand][:, None], points.lat[cand][None, :], points.lng[cand][None, :])
        iu = np.triu_indices(len(cand), k=1)
        s, d = sim[iu], km[iu]
        threshold = float(np.quantile(s, 0.9))
        keep = np.flatnonzero(s >= threshold)
        keep = keep[np.lexsort((-s[keep], -d[keep]))]
        used: set[int] = set()
        for p in keep:
            i, j = int(iu[0][p]), int(iu[1][p])
            if i in used or j in used or d[p] <= 0:
                continue
            used.update((i, j))
            a, b = sorted((points.location_ids[cand[i]], points.location_ids[cand[j]]))
            found.append(LookAlike(int(c), a, b, round(float(d[p]), 1), round(float(s[p]), 4)))
            if len(used) >= 2 * LOOKALIKES_PER_CLUSTER:
                break
    found.sort(key=lambda x: (-x.km, -x.similarity, x.a))
    return found[:LOOKALIKES_SHOWN]


# ---- comparisons -------------------------------------------------------------------------
def compare_previous(lake: Lake, run_id: str, previous: RunRef) -> ComparisonLine:
    """This run against the map's previous version (``svcluster.tasks.cluster.compare.compare_runs``)."""
    try:
        result = compare_runs(lake, run_id, previous.run_id)
    except SvclusterError as exc:  # e.g. no location in common
        return ComparisonLine(previous.name, "previous", 0, None, None, COMPARE_SOURCE, str(exc))
    return comparison_line(result, previous.name, "previous")


def compare_tags(lake: Lake, run_id: str) -> ComparisonLine:
    """This run against the map's own tags (``svcluster.tasks.cluster.compare.compare_with_tags``)."""
    try:
        result = compare_with_tags(lake, run_id)
    except SvclusterError as exc:  # e.g. only svcluster's own tags in the map
        return ComparisonLine("the map's tags", "tags", 0, None, None, COMPARE_SOURCE, str(exc))
    return comparison_line(result, "the map's tags", "tags")


def comparison_line(result: Comparison, against: str, kind: str) -> ComparisonLine:
    """The report's line for a comparison of this run (A) with ``against`` (B)."""
    notes = []
    if kind == "tags":
        notes.append("location-tag pairs")
    if result.changed is not None:
        notes.append(f"{result.changed:,} locations change tag")
    if result.unmatched is not None:
        notes.append(f"{result.unmatched:,} outside the best cluster matching")
    if result.only_a:
        notes.append(f"{result.only_a:,} only in this run" if kind == "previous" else f"{result.only_a:,} locations without a tag")
    return ComparisonLine(against, kind, result.compared, round(float(result.ari), 4), round(float(result.nmi), 4),
                          COMPARE_SOURCE, "; ".join(notes))


# ---- outliers, duplicates, lineage ---------------------------------------------------------
def load_shape(lake: Lake, run_id: str) -> Shape:
    """The run's first outliers and duplicate pairs (with their totals) and its lineage rows."""
    out = lake.query(load_sql("report/outliers"), {"run": run_id, "limit": OUTLIERS_SHOWN}).to_pylist()
    dup = lake.query(load_sql("report/duplicates"), {"run": run_id, "limit": DUPLICATES_SHOWN}).to_pylist()
    lineage = lake.query(load_sql("report/lineage"), {"run": run_id}).to_pylist()[:LINEAGE_ROWS]
    return Shape(
        outliers=[Outlier(r["location_id"], int(r["cluster"]), round(float(r["relative_distance"] or 0), 3), int(r["rank_in_run"])) for r in out],
        outliers_total=int(out[0]["total"]) if out else 0,
        duplicates=[
            DuplicatePair(int(r["cluster"]), r["location_a"], r["location_b"], round(float(r["cosine"]), 4), None if r["km"] is None else round(float(r["km"]), 2))
            for r in dup
        ],
        duplicates_total=int(dup[0]["total"]) if dup else 0,
        lineage=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in lineage],
    )


# ---- thumbnails --------------------------------------------------------------------------
def thumbnail_data_uri(data: bytes, px: int = THUMB_PX) -> str:
    """A small JPEG of an image (longest side ``px``), as a data URI."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (px, px))
        im = im.convert("RGB")
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_views(lake: Lake, location_ids: list[str], progress: Progress, where: dict[str, tuple[float, float]] | None = None) -> dict[str, list[View]]:
    """Thumbnails of the fetched views of these locations (at most 4 each); ``where`` gives each
    location's (lat, lng) for the Street View link of a view without a pano id."""
    if not location_ids:
        return {}
    rows = lake.query(load_sql("report/views"), {"ids": sorted(set(location_ids))}).to_pylist()
    chosen: list[dict[str, Any]] = []
    per: Counter[str] = Counter()
    for r in rows:
        if per[r["location_id"]] < MAX_VIEWS_PER_LOCATION:
            per[r["location_id"]] += 1
            chosen.append(r)
    progress.start(len(chosen), "thumbnails")

    def one(r: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        try:
            src = thumbnail_data_uri(lake.read_bytes(r["path"]))
        except (LakeError, OSError, ValueError):
            src = None  # a missing or unreadable blob: the page shows the view as missing
        progress.advance(1)
        return r, src

    out: dict[str, list[View]] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for r, src in pool.map(one, chosen):
            if src:
                lat, lng = (where or {}).get(r["location_id"], (None, None))
                view = View(int(r["heading"]), src, r["capture_date"], r["pano_id"], lat, lng, r["pitch"], r["fov"])
                out.setdefault(r["location_id"], []).append(view)
    progress.finish()
    return out


# ---- the whole report --------------------------------------------------------------------
def gather_report(lake: Lake, ref: RunRef, progress: Progress | None = None) -> ReportData:
    """Everything the report shows for a run."""
    import time

    progress = progress or NullProgress()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = lake.query(load_sql("report/run"), {"run": ref.run_id}).to_pylist()
    if not rows:
        raise NotFoundError(f"no cluster run {ref.run_id!r}")
    run = {k: _plain(v) for k, v in rows[0].items()}
    params = _params(run.get("params"))
    points = load_points(lake, ref.run_id)
    if len(points) == 0:
        raise NotFoundError(f"run {ref.name} has no assigned locations of map {ref.map!r} in the lake")
    timings["points"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vectors = load_run_vectors(lake, ref.run_id)
    typ, vrows = typicality_of(points, vectors)
    timings["vectors"] = time.perf_counter() - t0

    k = len(np.unique(points.cluster))
    n_typical = max(2, min(6, MAX_SAMPLE_LOCATIONS // (3 * max(k, 1))))
    n_edges = max(1, min(3, n_typical // 2))
    t0 = time.perf_counter()
    names = cluster_names(lake, ref.run_id)
    clusters = summarise_clusters(points, names, typ, n_typical, n_edges)
    timings["clusters"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if typ is not None and vrows is not None:
        lookalikes = find_lookalikes(points, vectors.vectors, vrows, typ)
        note = "pairs among each cluster's most similar 10% (cosine of the embeddings), farthest apart first"
    else:
        lookalikes, note = [], "no embeddings of this run's model in the lake: look-alikes need them"
    timings["lookalikes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    atlas, atlas_note = gather_atlas(lake, run, points.location_ids, vectors.location_ids, vectors.vectors, vrows)
    timings["atlas"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    comparisons = []
    previous = previous_version(lake, ref.map, ref.run_id)
    if previous:
        comparisons.append(compare_previous(lake, ref.run_id, previous))
    if any(points.tags):
        comparisons.append(compare_tags(lake, ref.run_id))
    sweep = []
    if run.get("sweep_id"):
        sweep = [SweepPoint(**r) for r in lake.query(load_sql("report/sweep"), {"sweep": run["sweep_id"]}).to_pylist()]
    timings["comparisons"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    shape = load_shape(lake, ref.run_id)
    timings["shape"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    sampled = [lid for c in clusters for lid in c.typical + c.edges] + [lid for p in lookalikes for lid in (p.a, p.b)]
    sampled += [o.location_id for o in shape.outliers] + [lid for p in shape.duplicates for lid in (p.a, p.b)]
    point_of = {lid: i for i, lid in enumerate(points.location_ids)}
    where = {lid: (float(points.lat[point_of[lid]]), float(points.lng[point_of[lid]])) for lid in set(sampled)}
    views = load_views(lake, sampled, progress, where)
    timings["thumbnails"] = time.perf_counter() - t0
    return ReportData(
        ref=ref, run=run, params=params, points=points, clusters=clusters, lookalikes=lookalikes,
        lookalike_note=note, comparisons=comparisons, sweep=sweep, naming_note="", views=views, timings=timings, shape=shape,
        atlas=atlas, atlas_note=atlas_note,
    )


def _params(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"params": str(raw)}
    return value if isinstance(value, dict) else {"params": value}


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat(timespec="seconds")
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
