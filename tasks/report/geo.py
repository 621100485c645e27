"""Geography for the report: great-circle distances, geographic centroids, the map projection,
and the cluster palette and marker shapes (shared by the HTML page and the PNG so both look
the same)."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

EARTH_KM = 6371.0088

# 20 well-separated colours (Tableau 20 reordered: strong hues first). Past 20 clusters a colour
# alone cannot stay distinct, so every cluster also has a marker shape: clusters 0-19 are
# circles, 20-39 squares, 40-59 triangles, 60-79 diamonds, 80-99 crosses, each block in the same
# 20 colours, so no two of the first 100 clusters share both colour and shape. Beyond 100 the
# colours are golden-ratio hues and the shapes cycle.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#9edae5", "#dbdb8d", "#393b79",
)
MARKERS = ("circle", "square", "triangle", "diamond", "cross")


def cluster_color(i: int) -> str:
    """The colour of the i-th cluster (by position in the legend), as #rrggbb."""
    if i < len(_PALETTE) * len(MARKERS):
        return _PALETTE[i % len(_PALETTE)]
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hls_to_rgb(h, 0.5, 0.65)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def cluster_marker(i: int) -> str:
    """The marker shape of the i-th cluster (one of MARKERS): the second cue past 20 clusters."""
    if i < len(_PALETTE) * len(MARKERS):
        return MARKERS[i // len(_PALETTE)]
    return MARKERS[i % len(MARKERS)]


def marker_mask(marker: str, r: int) -> list[tuple[int, int]]:
    """The pixel offsets (dx, dy) of a marker of radius ``r`` (the PNG stamps these)."""
    span = range(-r, r + 1)
    inside = {
        "circle": lambda dx, dy: dx * dx + dy * dy <= r * r + r,
        "square": lambda dx, dy: True,
        "triangle": lambda dx, dy: 2 * abs(dx) <= dy + r,  # apex up, base at the bottom
        "diamond": lambda dx, dy: abs(dx) + abs(dy) <= r,
        "cross": lambda dx, dy: abs(dx) <= max(r // 3, 0) or abs(dy) <= max(r // 3, 0),
    }[marker]
    return [(dx, dy) for dx in span for dy in span if inside(dx, dy)]


def hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def haversine_km(lat1: np.ndarray, lng1: np.ndarray, lat2: np.ndarray, lng2: np.ndarray) -> np.ndarray:
    """Great-circle distance in km (broadcasts)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(lng2) - np.radians(lng1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def geographic_centroid(lat: np.ndarray, lng: np.ndarray) -> tuple[float, float]:
    """The point on the sphere nearest the mean of the points' unit vectors (lat, lng)."""
    p, l = np.radians(lat), np.radians(lng)
    x, y, z = (np.cos(p) * np.cos(l)).mean(), (np.cos(p) * np.sin(l)).mean(), np.sin(p).mean()
    return math.degrees(math.atan2(z, math.hypot(x, y))), math.degrees(math.atan2(y, x))


@dataclass(frozen=True)
class Projection:
    """Equirectangular projection fitted to a bounding box: (lat, lng) -> pixels in a box."""

    south: float
    north: float
    west: float
    east: float
    width: int
    height: int
    pad: int

    @property
    def kx(self) -> float:
        return math.cos(math.radians((self.north + self.south) / 2))

    def scale(self) -> float:
        span_x = max((self.east - self.west) * self.kx, 1e-6)
        span_y = max(self.north - self.south, 1e-6)
        return min((self.width - 2 * self.pad) / span_x, (self.height - 2 * self.pad) / span_y)

    def project(self, lat: np.ndarray, lng: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.scale()
        cx = (self.west + self.east) / 2
        cy = (self.south + self.north) / 2
        x = self.width / 2 + (np.asarray(lng) - cx) * self.kx * s
        y = self.height / 2 - (np.asarray(lat) - cy) * s
        return x, y


def fitted_bounds(lat: np.ndarray, lng: np.ndarray, margin: float = 0.04) -> tuple[float, float, float, float]:
    """(south, north, west, east) around the points, with a small margin (never empty)."""
    if len(lat) == 0:
        return -10.0, 10.0, -10.0, 10.0
    s, n, w, e = float(np.min(lat)), float(np.max(lat)), float(np.min(lng)), float(np.max(lng))
    dy, dx = max(n - s, 0.5), max(e - w, 0.5)
    return (max(s - dy * margin, -89.0), min(n + dy * margin, 89.0), w - dx * margin, e + dx * margin)


def map_size(bounds: tuple[float, float, float, float], max_w: int, max_h: int, min_side: int = 320) -> tuple[int, int]:
    """Canvas size (w, h) that keeps the projected aspect ratio within the limits."""
    s, n, w, e = bounds
    kx = math.cos(math.radians((n + s) / 2))
    aspect = max((e - w) * kx, 1e-6) / max(n - s, 1e-6)
    width, height = max_w, max_w / aspect
    if height > max_h:
        height, width = max_h, max_h * aspect
    return max(int(width), min_side), max(int(height), min_side)


def graticule_step(bounds: tuple[float, float, float, float]) -> float:
    """Degrees between graticule lines: about 4–10 lines across the larger side."""
    s, n, w, e = bounds
    span = max(n - s, e - w)
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30):
        if span / step <= 10:
            return float(step)
    return 45.0
