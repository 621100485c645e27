"""Coastlines and borders drawn offline (issue 19.6): the asset built from Natural Earth (via the
npm package world-atlas, tasks/report/outlines.py) is small, holds Chile's coast where it is, and
reaches the report page and the PNG."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from svcluster.tasks.report.map_png import BORDER, COAST, LegendEntry, render_cluster_map
from svcluster.tasks.report.outlines import ASSET, outlines_in, simplify

ASSET_PATH = Path(__file__).resolve().parents[1] / "tasks" / "report" / "assets" / ASSET
CHILE = (-56.0, -17.0, -76.0, -66.0)


def test_the_asset_is_a_few_hundred_kb_and_says_where_it_comes_from():
    assert ASSET_PATH.stat().st_size < 400_000
    doc = json.loads(ASSET_PATH.read_text())
    assert "Natural Earth" in doc["source"] and doc["coast"] and doc["border"]


def test_chiles_coast_and_its_borders_are_where_they_are():
    o = outlines_in(CHILE)
    coast = np.concatenate([np.asarray(line).reshape(-1, 2) for line in o["coast"]])
    # Valparaíso (-33.05, -71.62) is on the coast: a coast point lies within ~10 km of it.
    assert np.min(np.hypot(coast[:, 0] + 33.05, (coast[:, 1] + 71.62) * np.cos(np.radians(33)))) < 0.1
    border = np.concatenate([np.asarray(line).reshape(-1, 2) for line in o["border"]])
    # The Andes border with Argentina passes near Paso Los Libertadores (-32.83, -70.08).
    assert np.min(np.hypot(border[:, 0] + 32.83, (border[:, 1] + 70.08) * np.cos(np.radians(33)))) < 0.2
    assert outlines_in((10.0, 11.0, -30.0, -29.0)) == {"coast": [], "border": []}  # open Atlantic


def test_simplify_keeps_the_ends_and_the_corner():
    pts = np.array([[0, 0], [1, 0.001], [2, 0], [2, 1], [2, 2.0]])
    assert simplify(pts, 0.01).tolist() == [[0, 0], [2, 0], [2, 2]]


def test_the_png_draws_the_coast():
    rng = np.random.default_rng(0)
    lat, lng = rng.uniform(-40, -20, 200), rng.uniform(-72, -70, 200)
    png = render_cluster_map(lat, lng, np.zeros(200, dtype=np.int64), [LegendEntry("#1f77b4", "c0", 200)], "t")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    assert (pixels == COAST).all(axis=1).sum() > 200 and (pixels == BORDER).all(axis=1).sum() > 50
