"""How the clusters split, drawn: a Sankey of ``cluster_lineage`` rows around one run.

One column per k (the run's coarser neighbour, the run, its finer neighbour), one bar per
cluster, its height the cluster's places; a band from a coarse cluster to a finer one for the
places that went there, as wide as their number, coloured like the coarse cluster. So "the
desert" at k=5 that became three deserts at k=18 is one bar fanning into three.
"""

from __future__ import annotations

from html import escape
from typing import Any

from svcluster.tasks.report.geo import cluster_color

BAR = 14
GAP = 6  # px between the bars of one column


def lineage_svg(rows: list[dict[str, Any]], run_k: int, width: int = 620, height: int = 320) -> str:
    """An inline SVG of ``rows`` (report/lineage.sql: name/k/cluster of the coarse and fine run,
    places); empty when there is nothing to draw."""
    if not rows:
        return ""
    runs = sorted({(r["k_coarse"], r["name_coarse"]) for r in rows} | {(r["k_fine"], r["name_fine"]) for r in rows})
    # A cluster's places: what leaves it when its run is a coarse side, else what arrives.
    size: dict[tuple[str, int], int] = {}
    for name in {n for _, n in runs}:
        as_coarse = [r for r in rows if r["name_coarse"] == name]
        as_fine = [r for r in rows if r["name_fine"] == name]
        use, side = (as_coarse, "coarse") if as_coarse else (as_fine, "fine")
        for r in use:
            key = (name, r[f"cluster_{side}"])
            size[key] = size.get(key, 0) + int(r["places"])
    left, right, top, bottom = 20, 20, 24, 12
    cols = len(runs)
    xs = {name: left + i * (width - left - right - BAR) / max(cols - 1, 1) for i, (_, name) in enumerate(runs)}
    total = max(sum(v for (n, _), v in size.items() if n == name) for _, name in runs)
    most_bars = max(sum(1 for (n, _) in size if n == name) for _, name in runs)
    scale = (height - top - bottom - GAP * (most_bars - 1)) / max(total, 1)
    y0: dict[tuple[str, int], float] = {}
    for _, name in runs:
        y = top
        for key in sorted(k for k in size if k[0] == name):
            y0[key] = y
            y += size[key] * scale + GAP
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="cluster lineage">']
    out_at = dict(y0)
    in_at = dict(y0)
    for r in sorted(rows, key=lambda r: (r["k_coarse"], r["cluster_coarse"], r["cluster_fine"])):
        a, b = (r["name_coarse"], r["cluster_coarse"]), (r["name_fine"], r["cluster_fine"])
        h = int(r["places"]) * scale
        x1, x2 = xs[a[0]] + BAR, xs[b[0]]
        ya, yb = out_at[a], in_at[b]
        out_at[a] += h
        in_at[b] += h
        mid = (x1 + x2) / 2
        path = f"M{x1:.1f},{ya:.1f} C{mid:.1f},{ya:.1f} {mid:.1f},{yb:.1f} {x2:.1f},{yb:.1f} L{x2:.1f},{yb + h:.1f} C{mid:.1f},{yb + h:.1f} {mid:.1f},{ya + h:.1f} {x1:.1f},{ya + h:.1f} Z"
        color = cluster_color(a[1]) if a[1] >= 0 else "#9e9e9e"
        title = f"{escape(a[0])} cluster {a[1]} → {escape(b[0])} cluster {b[1]}: {int(r['places'])} places"
        parts.append(f'<path d="{path}" fill="{color}" fill-opacity="0.45" stroke="none"><title>{title}</title></path>')
    for key, y in y0.items():
        color = cluster_color(key[1]) if key[1] >= 0 else "#9e9e9e"
        parts.append(
            f'<rect x="{xs[key[0]]:.1f}" y="{y:.1f}" width="{BAR}" height="{max(size[key] * scale, 1):.1f}" fill="{color}">'
            f"<title>{escape(key[0])} cluster {key[1]}: {size[key]} places</title></rect>"
        )
    for k, name in runs:
        anchor = "start" if xs[name] < width / 3 else "end" if xs[name] > 2 * width / 3 else "middle"
        label = f"{escape(name)} (k={k})" + (" — this run" if k == run_k else "")
        tx = xs[name] + (0 if anchor == "start" else BAR if anchor == "end" else BAR / 2)
        parts.append(f'<text x="{tx:.1f}" y="14" text-anchor="{anchor}">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)
