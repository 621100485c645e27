"""Coastlines and country borders for the report's map and PNG, offline.

The outlines come from Natural Earth (public domain) at 1:50m, as the maintained npm package
`world-atlas` (Mike Bostock's TopoJSON build of Natural Earth) ships them: an arc that only one
country uses is coast, one that two share is a border. ``build`` turns that file into
``assets/outlines.json`` — arcs simplified (Douglas-Peucker) and rounded to 0.01 degree (about a
kilometre), a few hundred KB — and the report reads that file, never the network:

    npm pack world-atlas@2 && tar xzf world-atlas-2.0.2.tgz
    python -m svcluster.tasks.report.outlines package/countries-50m.json

``outlines_in(bounds)`` gives the lines that cross a map's bounds, as [lat, lng] points.
Region borders (admin-1) come from another package: ``tasks/report/regions.py``.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from svcluster.tasks.files import atomic_write

ASSET = "outlines.json"
TOLERANCE = 0.02  # degrees: what Douglas-Peucker may move a point (about 2 km)
DECIMALS = 2


def decode_arcs(topo: dict) -> list[np.ndarray]:
    """TopoJSON's quantised, delta-encoded arcs as arrays of (lng, lat)."""
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        q = np.cumsum(np.asarray(arc, dtype=np.int64), axis=0)
        out.append(np.column_stack([q[:, 0] * sx + tx, q[:, 1] * sy + ty]))
    return out


def _arc_uses(topo: dict) -> np.ndarray:
    """How many country geometries use each arc (either direction)."""
    uses = np.zeros(len(topo["arcs"]), dtype=np.int32)

    def walk(node: object) -> set[int]:
        if isinstance(node, int):
            return {node if node >= 0 else ~node}
        return set().union(*(walk(n) for n in node)) if isinstance(node, list) else set()

    for geometry in topo["objects"]["countries"]["geometries"]:
        for i in walk(geometry.get("arcs", [])):
            uses[i] += 1
    return uses


def simplify(points: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker: the points of a polyline that keep it within ``tolerance`` of itself."""
    keep = np.zeros(len(points), dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b <= a + 1:
            continue
        seg = points[b] - points[a]
        rel = points[a + 1 : b] - points[a]
        norm = np.hypot(*seg)
        dist = np.abs(seg[0] * rel[:, 1] - seg[1] * rel[:, 0]) / norm if norm > 0 else np.hypot(rel[:, 0], rel[:, 1])
        i = int(np.argmax(dist))
        if dist[i] > tolerance:
            keep[a + 1 + i] = True
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
    return points[keep]


def encode_line(arc: np.ndarray, tolerance: float) -> list[int]:
    """An arc of (lng, lat) simplified and rounded, as the assets store it: lat, lng in hundredths
    of a degree, each point as the step from the last (empty when fewer than 2 points remain)."""
    pts = np.round(simplify(arc, tolerance), DECIMALS)
    pts = pts[np.r_[True, np.any(np.diff(pts, axis=0) != 0, axis=1)]]
    if len(pts) < 2:
        return []
    q = np.rint(pts[:, ::-1] * 10**DECIMALS).astype(np.int64)
    return np.vstack([q[:1], np.diff(q, axis=0)]).reshape(-1).tolist()


def build(countries_json: str | Path, out: str | Path | None = None) -> Path:
    """Write the outlines asset from world-atlas' ``countries-50m.json`` (see the module doc)."""
    topo = json.loads(Path(countries_json).read_text(encoding="utf-8"))
    arcs, uses = decode_arcs(topo), _arc_uses(topo)
    lines: dict[str, list[list[float]]] = {"coast": [], "border": []}
    for arc, n in zip(arcs, uses):
        if n == 0:
            continue
        line = encode_line(arc, TOLERANCE)
        if line:
            lines["coast" if n == 1 else "border"].append(line)
    doc = {"source": "Natural Earth 1:50m (public domain), from the npm package world-atlas 2",
           "encoding": f"per line: lat, lng in 1e-{DECIMALS} degree, delta-encoded", **lines}  # fmt: skip
    return write_asset(doc, ASSET, out)


def write_asset(doc: dict, name: str, out: str | Path | None = None) -> Path:
    """Write an outlines asset (compact JSON) to ``out``, else to the package's ``assets/name``."""
    target = Path(out) if out is not None else Path(__file__).with_name("assets") / name
    with atomic_write(target, text=True) as fh:
        fh.write(json.dumps(doc, separators=(",", ":")))
    return target


def read_asset(name: str) -> dict:
    return json.loads(resources.files("svcluster.tasks.report").joinpath("assets", name).read_text(encoding="utf-8"))


def decode_line(line: list[int]) -> np.ndarray:
    """An encoded line (``encode_line``) as (lat, lng) rows in degrees."""
    return np.cumsum(np.asarray(line, dtype=np.int64).reshape(-1, 2), axis=0) * 10.0**-DECIMALS


@cache
def _outlines() -> dict[str, list[np.ndarray]]:
    doc = read_asset(ASSET)
    return {kind: [decode_line(line) for line in doc[kind]] for kind in ("coast", "border")}


def outlines_in(bounds: tuple[float, float, float, float], margin: float = 0.5) -> dict[str, list[list[float]]]:
    """The coast and border lines that cross ``bounds`` (south, north, west, east) widened by
    ``margin`` degrees, each as a flat [lat, lng, lat, lng, ...] list."""
    return {kind: lines_crossing(lines, bounds, margin) for kind, lines in _outlines().items()}


def lines_crossing(lines: list[np.ndarray], bounds: tuple[float, float, float, float], margin: float) -> list[list[float]]:
    """The lines (arrays of lat, lng) whose extent meets ``bounds`` widened by ``margin``, flattened."""
    s, n, w, e = bounds[0] - margin, bounds[1] + margin, bounds[2] - margin, bounds[3] + margin
    return [
        np.round(line, DECIMALS).reshape(-1).tolist()
        for line in lines
        if line[:, 0].max() >= s and line[:, 0].min() <= n and line[:, 1].max() >= w and line[:, 1].min() <= e
    ]


if __name__ == "__main__":
    print(build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
