"""The report of a cluster run: one self-contained HTML page (opens from disk, offline) and a
PNG of the cluster map for sharing.

The page embeds everything: CSS, JavaScript, the data as JSON and the sampled views as small
JPEG data URIs. The map is drawn on one <canvas> (equirectangular projection fitted to the
points, with a graticule), so 100,000 locations stay responsive. The data comes from
``svcluster.tasks.report.data``; names from ``svcluster.tasks.cluster.naming``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from svcluster.tasks.report.map_png import LegendEntry, render_cluster_map
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.files import atomic_write
from svcluster.tasks.lake.store import Lake
from svcluster.tasks.cluster.naming import NO_TEXT_TOWER, name_clusters
from svcluster.tasks.progress import NullProgress, Progress
from svcluster.tasks.report.atlas import atlas_page_data
from svcluster.tasks.report.data import ReportData, SweepPoint, gather_report
from svcluster.tasks.report.geo import fitted_bounds, graticule_step, map_size
from svcluster.tasks.report.lineage_svg import lineage_svg
from svcluster.tasks.report.outlines import outlines_in
from svcluster.tasks.report.regions import region_lines_in
from svcluster.tasks.cluster.runs import RunRef, resolve_run

HTML_NAME = "report.html"
PNG_NAME = "cluster_map.png"
RUN_FIELDS = (
    "name", "run_id", "map", "model", "pooling", "precision", "algorithm", "k", "nonempty_clusters", "pca_dims",
    "pca_explained_variance", "seed", "n_locations", "inertia", "silhouette", "warnings", "sweep_id", "aligned_to",
    "fingerprint", "map_sha256", "code_version", "created_at",
)


@dataclass(frozen=True)
class ReportResult:
    """What ``svcluster report`` wrote."""

    run: str
    run_id: str
    html: str
    png: str
    locations: int
    clusters: int  # non-empty clusters (fewer than k when the input was degenerate)
    k: int
    notices: list[str]  # the run is of an earlier version of the map; degenerate input
    sampled_locations: int
    thumbnails: int
    lookalikes: int
    names: str  # how the clusters got (or did not get) names
    html_bytes: int
    seconds: float
    timings: dict[str, float]  # seconds per stage: points, vectors, clusters, lookalikes, ...


class ReportArtifacts(NamedTuple):
    """A run's summary for a Prefect markdown artifact, and where the map PNG is."""

    markdown: str
    png_path: str


def ensure_names(lake: Lake, ref: RunRef, model: str | None, enabled: bool = True) -> str:
    """Name the run's clusters if it has none yet; returns a note for the page."""
    from svcluster.tasks.cluster.naming import cluster_names

    if cluster_names(lake, ref.run_id):
        return "names: the best-matching curated descriptions (text tower of the run's model, scored against each cluster centroid)"
    if (model or "baseline") == "baseline":
        return NO_TEXT_TOWER
    if not enabled:
        return "no names: naming was not requested"
    try:
        result = name_clusters(lake, ref)
    except OSError as exc:  # the model's weights are not available here (offline, no cache)
        return f"no names: the model {model!r} could not be loaded ({exc.__class__.__name__})"
    except SvclusterError as exc:  # e.g. the run's embeddings are gone: the report still goes on
        return f"no names: {exc}"
    if result.reason:
        return result.reason
    return "names: the best-matching curated descriptions (text tower of the run's model, scored against each cluster centroid)"


def build_report(
    lake: Lake,
    run: str | RunRef,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
    name: bool = True,
) -> ReportResult:
    """Write ``report.html`` and ``cluster_map.png`` for ``run`` into ``out_dir``."""
    started = time.perf_counter()
    ref = run if isinstance(run, RunRef) else resolve_run(lake, run)
    model = lake_run_model(lake, ref)
    note = ensure_names(lake, ref, model, enabled=name)
    data = gather_report(lake, ref, progress or NullProgress())
    data.naming_note = note
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SvclusterError(f"cannot create the report folder {out}: {exc.strerror or exc}") from None
    html = render_page(data)
    png = render_png(data)
    _write_atomic(out / HTML_NAME, html.encode("utf-8"))
    _write_atomic(out / PNG_NAME, png)
    return ReportResult(
        run=ref.name,
        run_id=ref.run_id,
        html=str(out / HTML_NAME),
        png=str(out / PNG_NAME),
        locations=len(data.points),
        clusters=sum(1 for c in data.clusters if c.cluster >= 0),
        k=int(data.run.get("k") or ref.k),
        notices=notices(data),
        sampled_locations=len(_sample_ids(data)),
        thumbnails=sum(len(v) for v in data.views.values()),
        lookalikes=len(data.lookalikes),
        names=note,
        html_bytes=len(html.encode("utf-8")),
        seconds=round(time.perf_counter() - started, 2),
        timings={k: round(v, 3) for k, v in data.timings.items()},
    )


def lake_run_model(lake: Lake, ref: RunRef) -> str | None:
    from svcluster.sql import load_sql

    rows = lake.query(load_sql("report/run"), {"run": ref.run_id}).to_pylist()
    return rows[0]["model"] if rows else None


# ---- the page -----------------------------------------------------------------------------
def _asset(name: str) -> str:
    return resources.files("svcluster.tasks.report").joinpath("assets", name).read_text(encoding="utf-8")


def _sample_ids(data: ReportData) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    for c in data.clusters:
        for lid in c.typical + c.edges:
            if lid not in seen:
                seen.add(lid)
                ids.append(lid)
    shape = [o.location_id for o in data.shape.outliers] + [lid for p in data.shape.duplicates for lid in (p.a, p.b)]
    for lid in [lid for p in data.lookalikes for lid in (p.a, p.b)] + shape:
        if lid not in seen:
            seen.add(lid)
            ids.append(lid)
    return ids


def notices(data: ReportData) -> list[str]:
    """What the reader must know before trusting the page: a run of an earlier version of the
    map, and the warnings recorded with the run (degenerate input)."""
    from svcluster.tasks.cluster.step import parse_warnings

    out = [data.ref.stale_note] if data.ref.stale_note else []
    return out + [f"warning: {w}" for w in parse_warnings(data.run.get("warnings"))]


def k_and_clusters(data: ReportData) -> str:
    """``k=5 · 5 non-empty clusters``: the k asked for and the clusters that hold a place."""
    k = int(data.run.get("k") or data.ref.k)
    found = sum(1 for c in data.clusters if c.cluster >= 0)
    noise = next((c.size for c in data.clusters if c.cluster < 0), 0)
    return f"k={k} · {found} non-empty cluster{'s' if found != 1 else ''}" + (f" · {noise:,} noise" if noise else "")


def page_data(data: ReportData) -> dict[str, Any]:
    """The JSON the page script reads: columns of points, clusters, samples, run and comparisons."""
    pts = data.points
    cluster_pos = {c.cluster: i for i, c in enumerate(data.clusters)}
    regions, region_idx = np.unique(np.asarray(pts.region, dtype=object).astype(str), return_inverse=True)
    tag_text = [", ".join(t) for t in pts.tags]
    tagsets, tag_idx = np.unique(np.asarray(tag_text, dtype=object).astype(str), return_inverse=True)
    point_of = {lid: i for i, lid in enumerate(pts.location_ids)}
    samples, sample_pos = [], {}
    for lid in _sample_ids(data):
        i = point_of[lid]
        sample_pos[lid] = len(samples)
        samples.append(
            {
                "id": lid,
                "p": i,
                "lat": round(float(pts.lat[i]), 6),
                "lng": round(float(pts.lng[i]), 6),
                "c": cluster_pos[int(pts.cluster[i])],
                "region": pts.region[i],
                "tags": tag_text[i],
                "views": [{"h": v.heading, "src": v.src, "date": v.capture_date, "url": v.url} for v in data.views.get(lid, [])],
            }
        )
    bounds = fitted_bounds(pts.lat, pts.lng)
    width, height = map_size(bounds, 560, 720)
    distance = np.round(pts.distance.astype(np.float64), 4)
    run = {k: data.run.get(k) for k in RUN_FIELDS if k in data.run}
    run["stale"] = "yes: made on an earlier version of the map" if data.ref.stale else "no"
    return {
        "title": f"{data.ref.name} · {k_and_clusters(data)} of {len(pts):,} locations",
        "subtitle": f"map {data.ref.map} · model {data.run.get('model')} · run {data.ref.run_id}",
        "notices": notices(data),
        "map": {"bounds": bounds, "width": width, "height": height, "pad": 12, "graticule": graticule_step(bounds)},
        "outlines": {**outlines_in(bounds), "region": region_lines_in(bounds, pts.region_countries)},
        "points": {
            "lat": np.round(pts.lat, 5).tolist(),
            "lng": np.round(pts.lng, 5).tolist(),
            "c": [cluster_pos[int(c)] for c in pts.cluster.tolist()],
            "d": [None if math.isnan(d) else d for d in distance.tolist()],
            "r": region_idx.tolist(),
            "t": tag_idx.tolist(),
        },
        "regions": regions.tolist(),
        "tagsets": tagsets.tolist(),
        "clusters": [
            {
                "id": c.cluster,
                "color": c.color,
                "marker": c.marker,
                "size": c.size,
                "share": c.share,
                "names": c.names,
                "spread_km": c.spread_km,
                "centroid": list(c.centroid),
                "regions": c.regions,
                "tags": c.tags,
                "typical": [sample_pos[x] for x in c.typical],
                "edges": [sample_pos[x] for x in c.edges],
            }
            for c in data.clusters
        ],
        "samples": samples,
        "lookalikes": [
            {"c": cluster_pos[p.cluster], "a": sample_pos[p.a], "b": sample_pos[p.b], "km": p.km, "sim": p.similarity}
            for p in data.lookalikes
        ],
        "lookalike_note": data.lookalike_note,
        "naming_note": data.naming_note,
        "run": run,
        "params": data.params,
        "sweep_svg": sweep_svg(data.sweep, int(data.run.get("k") or 0)) if len(data.sweep) > 1 else "",
        "comparisons": [c.__dict__ for c in data.comparisons],
        "outliers": [
            {"s": sample_pos[o.location_id], "c": cluster_pos[o.cluster], "rel": o.relative_distance, "rank": o.rank_in_run}
            for o in data.shape.outliers
        ],
        "outliers_total": data.shape.outliers_total,
        "duplicates": [
            {"c": cluster_pos.get(p.cluster, 0), "a": sample_pos[p.a], "b": sample_pos[p.b], "cos": p.cosine, "km": p.km}
            for p in data.shape.duplicates
        ],
        "duplicates_total": data.shape.duplicates_total,
        "lineage": data.shape.lineage,
        "lineage_svg": lineage_svg(data.shape.lineage, int(data.run.get("k") or 0)),
        "atlas": atlas_page_data(data.atlas, data.ref.map, int(data.run.get("k") or data.ref.k)),
        "atlas_note": data.atlas_note,
    }


def render_page(data: ReportData) -> str:
    """The self-contained HTML page."""
    payload = json.dumps(page_data(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("<", "\\u003c")  # nothing in the data can close the <script>
    title = f"{data.ref.name} — svcluster report"
    page = _asset("page.html")
    # Insert the data last, so nothing in it can be mistaken for a placeholder.
    page = page.replace("__TITLE__", _html_escape(title))
    page = page.replace("/*__CSS__*/", _asset("page.css"))
    head, tail = page.split("/*__JS__*/", 1)
    page = head + _asset("page.js") + "\n" + _asset("atlas.js") + tail
    head, tail = page.split("__DATA__", 1)
    return head + payload + tail


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def sweep_svg(points: list[SweepPoint], current_k: int, width: int = 620, height: int = 240) -> str:
    """An inline SVG of a k-sweep: inertia (left axis) and silhouette (right axis) against k."""
    ks = [p.k for p in points]
    left, right, top, bottom = 64, 64, 16, 36
    pw, ph = width - left - right, height - top - bottom
    kmin, kmax = min(ks), max(ks)

    def x(k: float) -> float:
        return left + (k - kmin) / max(kmax - kmin, 1) * pw

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="k-sweep">']
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#dfe3e8"/>')
    series = (("inertia", "#1f77b4", "start", left - 6), ("silhouette", "#d62728", "end", width - right + 6))
    for key, color, _, axis_x in series:
        vals = [(p.k, getattr(p, key)) for p in points if getattr(p, key) is not None]
        if not vals:
            continue
        lo, hi = min(v for _, v in vals), max(v for _, v in vals)
        span = (hi - lo) or 1.0

        def y(v: float, lo: float = lo, span: float = span) -> float:
            return top + ph - (v - lo) / span * ph

        pts = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in vals)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x(k):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"><title>k={k} {key} {v:.4g}</title></circle>' for k, v in vals]
        anchor = "end" if axis_x < width / 2 else "start"
        for v in (lo, hi):
            parts.append(f'<text x="{axis_x}" y="{y(v) + 4:.1f}" text-anchor="{anchor}" fill="{color}">{v:.4g}</text>')
        label_x = 4 if anchor == "end" else width - 4
        parts.append(f'<text x="{label_x}" y="{top + ph / 2:.1f}" text-anchor="{"start" if anchor == "end" else "end"}" fill="{color}">{key}</text>')
    for k in sorted(set(ks)):
        parts.append(f'<text x="{x(k):.1f}" y="{height - bottom + 16}" text-anchor="middle">{k}</text>')
    if current_k in ks:
        parts.append(f'<line x1="{x(current_k):.1f}" x2="{x(current_k):.1f}" y1="{top}" y2="{top + ph}" stroke="#333" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x(current_k):.1f}" y="{top + 12}" text-anchor="middle">this run</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle">k</text></svg>')
    return "".join(parts)


# ---- the PNG ------------------------------------------------------------------------------
def render_png(data: ReportData) -> bytes:
    pos = {c.cluster: i for i, c in enumerate(data.clusters)}
    legend = [
        LegendEntry(c.color, f"{c.cluster}" + (f" · {c.names[0]}" if c.names else ""), c.size, c.marker) for c in data.clusters
    ]
    index = np.asarray([pos[int(c)] for c in data.points.cluster.tolist()], np.int64)
    title = f"{data.ref.name}: {k_and_clusters(data)} · model {data.run.get('model')}" + (" · earlier map version" if data.ref.stale else "")
    return render_cluster_map(data.points.lat, data.points.lng, index, legend, title, region_countries=data.points.region_countries)


def _write_atomic(path: Path, data: bytes) -> None:
    try:
        with atomic_write(path) as fh:
            fh.write(data)
    except OSError as exc:
        raise SvclusterError(f"cannot write {path}: {exc.strerror or exc}") from None


# ---- Prefect artifacts ----------------------------------------------------------------------
def report_artifacts(lake: Lake, run: str | RunRef, out_dir: str | Path | None = None) -> ReportArtifacts:
    """The run's report as a markdown summary plus its map PNG, for a Prefect artifact.

    The report (HTML + PNG) is written to ``out_dir`` when given, else into the lake under
    ``reports/<run_id>/``; the markdown links the PNG and the page there.
    """
    ref = run if isinstance(run, RunRef) else resolve_run(lake, run)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(out_dir) if out_dir is not None else Path(tmp)
        result = build_report(lake, ref, target)
        if out_dir is None:
            png_rel = f"reports/{ref.run_id}/{PNG_NAME}"
            html_rel = f"reports/{ref.run_id}/{HTML_NAME}"
            lake.write_bytes(png_rel, Path(result.png).read_bytes())
            lake.write_bytes(html_rel, Path(result.html).read_bytes())
            png_path, html_path = lake.url(png_rel), lake.url(html_rel)
        else:
            png_path, html_path = result.png, result.html
        data_rows = _summary_rows(lake, ref)
    return ReportArtifacts(summary_markdown(result, data_rows, png_path, html_path), png_path)


def _summary_rows(lake: Lake, ref: RunRef) -> list[dict[str, Any]]:
    from svcluster.sql import load_sql
    from svcluster.tasks.cluster.naming import cluster_names

    t = lake.query(load_sql("report/points"), {"run": ref.run_id})
    sizes: dict[int, int] = {}
    for c in t.column("cluster").to_pylist():
        sizes[c] = sizes.get(c, 0) + 1
    names = cluster_names(lake, ref.run_id)
    return [{"cluster": c, "size": n, "names": names.get(c, [])} for c, n in sorted(sizes.items())]


def summary_markdown(result: ReportResult, rows: list[dict[str, Any]], png_path: str, html_path: str) -> str:
    """Markdown: the run, its clusters (size, names) and links to the map and the page."""
    lines = [
        f"# Clusters of {result.run}",
        "",
        f"{result.locations:,} locations in {result.clusters} non-empty clusters (k={result.k}) · run `{result.run_id}`",
        "",
        *[f"> **{n}**\n" for n in result.notices],
        f"![cluster map]({_md_url(png_path)})",
        "",
        f"Full report: [{HTML_NAME}]({_md_url(html_path)}) · {result.names}",
        "",
        "| cluster | locations | names |",
        "|---:|---:|---|",
    ]
    for r in rows:
        names = ", ".join(r["names"]).replace("|", "\\|") or "–"
        lines.append(f"| {r['cluster']} | {r['size']:,} | {names} |")
    return "\n".join(lines) + "\n"


def _md_url(path: str) -> str:
    if "://" in path:
        return path
    return Path(path).resolve().as_uri()
