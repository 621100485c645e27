"""Report speed on a 100,000-location run: time to write the report, and the page's time to
first render in headless Chromium; the atlas's projection time on its own (the first report of a
vector set computes it), the report time with the atlas read back from the lake (every later
report of those embeddings), and the atlas's redraw time.

Baselines, in the same process on the same data:
- writing: the floor of any report — read the run's points from the lake and dump them as JSON;
- page: the same points drawn as 100,000 SVG <circle> DOM nodes instead of one <canvas>.

    python benchmarks/report.py [--quick] [--n 100000] [--dim 768] [--k 12]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svcluster.sql import load_sql
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.report.page import build_report
from tests.report_helpers import synthetic_map, write_run
from tests.test_report_browser import CHROMIUM_FLAGS, ensure_chromium


def chromium_render_ms(binary: str, profile: Path, page: Path, fragment: str = "") -> tuple[float, float, dict[str, str]]:
    """(wall seconds for chromium to load+dump, the page's own render ms, <html> attributes)."""
    t = time.perf_counter()
    done = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri() + fragment],
                          capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - t
    tag = re.search(r"<html([^>]*)>", done.stdout)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1))) if tag else {}
    return wall, float(attrs.get("data-render-ms", "nan")), attrs


def svg_baseline_page(path: Path, lat: np.ndarray, lng: np.ndarray, labels: np.ndarray) -> None:
    """The naive page: one SVG circle element per location, rendered by the browser's DOM."""
    x = (lng - lng.min()) / max(float(np.ptp(lng)), 1e-6) * 500
    y = (lat.max() - lat) / max(float(np.ptp(lat)), 1e-6) * 700
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    circles = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.5" fill="{palette[c % 8]}"/>' for a, b, c in zip(x, y, labels))
    path.write_text(
        "<!doctype html><html><head><script>var t0=performance.now();</script></head><body>"
        f'<svg width="520" height="720">{circles}</svg>'
        "<script>document.documentElement.setAttribute('data-render-ms',(performance.now()-t0).toFixed(1))</script>"
        "</body></html>",
        encoding="utf-8",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 locations, 128 dims")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--keep", type=Path, help="copy report.html and cluster_map.png here")
    args = ap.parse_args()
    n, dim = (10_000, 128) if args.quick else (args.n, args.dim)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lake = open_lake(str(folder / "lake"))
        t = time.perf_counter()
        m = synthetic_map(lake, folder, n, dim=dim, views=None)
        # k clusters: the landscape bands cut further by latitude (a realistic, uneven partition)
        cuts = np.quantile(m.lat, np.linspace(0, 1, args.k + 1)[1:-1])
        labels = np.searchsorted(cuts, m.lat).astype(np.int64)
        run_id = write_run(lake, m.name, m.location_ids, m.vectors, labels, m.model)
        print(f"set-up: {n:,} locations, {dim}-d embeddings, 4 views each, k={args.k} ({time.perf_counter() - t:.1f} s)")

        t = time.perf_counter()
        points = lake.query(load_sql("report/points"), {"run": run_id})
        floor = {c: points.column(c).to_pylist() for c in ("lat", "lng", "cluster")}
        (folder / "floor.json").write_text(json.dumps(floor))
        base_s = time.perf_counter() - t

        t = time.perf_counter()
        result = build_report(lake, run_id, folder / "report")
        ours_s = time.perf_counter() - t
        print(f"report written:   {ours_s:6.2f} s  ({result.html_bytes / 1e6:.1f} MB html, {result.thumbnails} thumbnails, "
              f"{result.lookalikes} look-alike pairs)  {'OK' if ours_s < 60 else 'OVER'} the 60 s budget")
        print("  stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
        print(f"atlas projection (PCA 50 -> openTSNE, computed once per vector set): {result.timings['atlas']:6.2f} s")
        t = time.perf_counter()
        result = build_report(lake, run_id, folder / "report")
        again_s = time.perf_counter() - t
        print(f"report written again, the atlas read from the lake: {again_s:6.2f} s (atlas stage {result.timings['atlas']:.2f} s)  "
              f"{'OK' if again_s < 60 else 'OVER'} the 60 s budget")
        print(f"baseline (read points + dump JSON): {base_s:6.2f} s   ratio ours/baseline = {ours_s / base_s:.1f}x")

        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(result.html, args.keep)
            shutil.copy(result.png, args.keep)
        binary = ensure_chromium()
        wall, render_ms, attrs = chromium_render_ms(binary, folder / "profile", Path(result.html), "#bench=1")
        assert attrs.get("data-rendered") == "1" and int(attrs.get("data-points", 0)) == n, attrs
        svg_page = folder / "svg.html"
        svg_baseline_page(svg_page, m.lat, m.lng, labels)
        svg_wall, _, _ = chromium_render_ms(binary, folder / "profile", svg_page)
        print(f"page first render (canvas, script start -> map drawn + all sections built): {render_ms:8.1f} ms "
              f"(chromium load+dump {wall:.1f} s)")
        print(f"map redraw (zoom / pan / highlight), {n:,} points on one canvas: {float(attrs['data-redraw-ms']):.1f} ms")
        print(f"atlas redraw (zoom / pan / selection), {n:,} points on one canvas: {float(attrs['data-atlas-redraw-ms']):.1f} ms "
              f"{'OK' if float(attrs['data-atlas-redraw-ms']) < 50 else 'OVER'} the 50 ms budget")
        print(f"baseline page ({n:,} SVG circles as DOM nodes): chromium load+dump {svg_wall:.1f} s")
        print(f"ratio load+dump ours/baseline = {wall / svg_wall:.2f}x")


if __name__ == "__main__":
    main()
