"""The cluster map as a PNG for sharing: every location as a dot coloured by cluster, on a
graticule fitted to the points, with a legend (cluster, name, size). Drawn with Pillow and
numpy (dots are stamped into a pixel array, so 100,000 locations take well under a second)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from svcluster.tasks.report.outlines import outlines_in
from svcluster.tasks.report.regions import region_lines_in
from svcluster.tasks.report.geo import (
    MARKERS,
    Projection,
    fitted_bounds,
    graticule_step,
    hex_rgb,
    map_size,
    marker_mask,
)

BACKGROUND = (238, 243, 247)
PANEL = (255, 255, 255)
INK = (29, 35, 42)
MUTED = (102, 112, 122)
GRID = (205, 214, 222)
COAST = (127, 147, 163)  # the page's coastline colour (page.js drawOutlines)
BORDER = (167, 182, 194)
REGION = (196, 176, 206)  # region borders, as on the page (page.js drawOutlines)


@dataclass(frozen=True)
class LegendEntry:
    """One legend line: a cluster's colour, marker shape (``geo.MARKERS``), label and size."""

    color: str
    label: str
    size: int
    marker: str = "circle"


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_cluster_map(
    lat: np.ndarray,
    lng: np.ndarray,
    color_index: np.ndarray,
    legend: list[LegendEntry],
    title: str,
    *,
    max_width: int = 900,
    max_height: int = 1000,
    region_countries: set[str] | frozenset[str] = frozenset(),
) -> bytes:
    """PNG bytes of the map. ``color_index[i]`` is point i's position in ``legend``; the region
    borders of ``region_countries`` (``regions.region_countries``) are drawn under the coast."""
    bounds = fitted_bounds(lat, lng)
    w, h = map_size(bounds, max_width, max_height, min_side=360)
    proj = Projection(*bounds, width=w, height=h, pad=14)
    panel_w = 330
    top = 54
    legend_h = 26 * len(legend) + 40
    total_h = max(h, legend_h) + top + 16
    img = Image.new("RGB", (w + panel_w + 24, total_h), PANEL)
    draw = ImageDraw.Draw(img)
    draw.text((16, 14), title, font=_font(20), fill=INK)

    # map background + graticule
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = BACKGROUND
    map_img = Image.fromarray(canvas)
    mdraw = ImageDraw.Draw(map_img)
    step = graticule_step(bounds)
    s, n, west, e = bounds
    small = _font(11)
    lat0 = np.ceil(s / step) * step
    while lat0 <= n:
        _, y = proj.project(np.array([lat0]), np.array([west]))
        mdraw.line([(0, float(y[0])), (w, float(y[0]))], fill=GRID, width=1)
        mdraw.text((3, float(y[0]) - 13), _deg(lat0, "N", "S"), font=small, fill=MUTED)
        lat0 += step
    lng0 = np.ceil(west / step) * step
    while lng0 <= e:
        x, _ = proj.project(np.array([s]), np.array([lng0]))
        mdraw.line([(float(x[0]), 0), (float(x[0]), h)], fill=GRID, width=1)
        if float(x[0]) < w - 40:
            mdraw.text((float(x[0]) + 2, h - 14), _deg(lng0, "E", "W"), font=small, fill=MUTED)
        lng0 += step
    lines = {**outlines_in(bounds), "region": region_lines_in(bounds, region_countries)}
    for kind, color, width in (("region", REGION, 1), ("coast", COAST, 2), ("border", BORDER, 1)):
        for line in lines[kind]:
            pts = np.asarray(line).reshape(-1, 2)
            lx, ly = proj.project(pts[:, 0], pts[:, 1])
            mdraw.line(list(zip(lx.tolist(), ly.tolist())), fill=color, width=width)
    pixels = np.asarray(map_img).copy()

    # dots: stamp a small marker per point (its cluster's shape), biggest cluster first so small
    # ones stay on top; with more than one shape in use a marker needs 2 px to show its shape
    x, y = proj.project(lat, lng)
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    r = 1 if len(lat) > 50_000 else 2 if len(lat) > 5_000 else 3
    if len({e.marker for e in legend}) > 1:
        r = max(r, 2)
    masks = {m: marker_mask(m, r) for m in MARKERS}
    colors = np.array([hex_rgb(e.color) for e in legend] or [(0, 0, 0)], np.uint8)
    sizes = np.bincount(color_index, minlength=len(legend)) if len(color_index) else np.zeros(0, int)
    for ci in np.argsort(-sizes, kind="stable"):
        sel = color_index == ci
        px, py = xi[sel], yi[sel]
        for dx, dy in masks[legend[ci].marker if ci < len(legend) else "circle"]:
            qx, qy = px + dx, py + dy
            ok = (qx >= 0) & (qx < w) & (qy >= 0) & (qy < h)
            pixels[qy[ok], qx[ok]] = colors[ci]
    img.paste(Image.fromarray(pixels), (16, top))
    draw.rectangle([16, top, 16 + w - 1, top + h - 1], outline=GRID)

    # legend
    lx, ly = w + 36, top
    draw.text((lx, ly), f"{len(legend)} clusters · {len(lat):,} locations", font=_font(14), fill=MUTED)
    ly += 28
    font = _font(14)
    for entry in legend:
        draw_marker(draw, entry.marker, lx + 7, ly + 9, 7, hex_rgb(entry.color))
        label = entry.label if len(entry.label) <= 34 else entry.label[:33] + "…"
        draw.text((lx + 22, ly), label, font=font, fill=INK)
        draw.text((lx + panel_w - 70, ly), f"{entry.size:,}", font=font, fill=MUTED)
        ly += 26
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def draw_marker(draw: ImageDraw.ImageDraw, marker: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
    """A legend marker of radius ``r`` centred on (cx, cy), outlined in grey."""
    outline = (90, 90, 90)
    if marker == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline)
    elif marker == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill, outline=outline)
    elif marker == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill, outline=outline)
    elif marker == "cross":
        t = max(r / 3, 1.5)
        draw.polygon(
            [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx + t, cy + t),
             (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)],
            fill=fill, outline=outline,
        )  # fmt: skip
    else:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline)


def _deg(v: float, pos: str, neg: str) -> str:
    r = round(abs(float(v)), 1)
    return f"{r:g}°{pos if v >= 0 else neg}"
