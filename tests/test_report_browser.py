"""The report in a real headless Chromium (Debian's ``chromium``): it renders the map and every
cluster section without console errors, pins a location with its views, a screenshot is not
blank, and the atlas answers real mouse events (hover, click, lasso, box, download; tests/cdp.py).
Chromium is installed here when missing and we are root; otherwise the test fails with a clear
message (never skipped)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svcluster.flows.cli import main
from svcluster.tasks.report.page import build_report
from tests.cdp import CHROMIUM_FLAGS, Browser
from tests.report_helpers import synthetic_map, write_sweep



def ensure_chromium() -> str:
    """The chromium binary; installs Debian's package when missing and running as root."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("Chromium is required for the report browser test: install Debian's `chromium` package (apt-get install -y chromium)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=False, env=env, capture_output=True, timeout=600)
    done = subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, env=env, capture_output=True, text=True, timeout=900)
    found = shutil.which("chromium")
    if not found:
        pytest.fail(f"could not install chromium with apt-get: {done.stderr[-500:]}")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return ensure_chromium()


def run_chromium(binary: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True, text=True, timeout=120, check=False,
    )


def console_errors(stderr: str) -> list[str]:
    """Console messages of the page at error level, and uncaught exceptions, from Chromium's log."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line and ("Uncaught" in line or "ERROR:CONSOLE" in line)]


def html_attrs(dom: str) -> dict[str, str]:
    tag = re.search(r"<html([^>]*)>", dom).group(1)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    """A 400-location, 5-cluster run of a k-sweep (with a previous version), reported."""
    from svcluster.tasks.lake.store import open_lake

    folder = tmp_path_factory.mktemp("browser")
    lake = open_lake(str(folder / "lake"))
    m = synthetic_map(lake, folder, 400, dim=32, views=300)
    runs = write_sweep(lake, m)
    result = build_report(lake, runs[5], folder / "report")
    return Path(result.html), {"clusters": result.clusters, "lookalikes": result.lookalikes, "png": result.png,
                               "lake": lake, "run": runs[5]}


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> tuple[Path, dict]:
    """The demo, step by step as a user runs it: the Chile demo map (120 locations) ingested,
    fetched for real from the demo's scene server on 127.0.0.1, embedded with the baseline
    model, clustered as a k-sweep 4..6; the k=5 run is reported."""
    from svcluster.flows.demo import DEMO_MAP, demo_streetview, write_demo_map
    from svcluster.tasks.lake.store import open_lake

    folder = tmp_path_factory.mktemp("demo")
    lake_uri = str(folder / "lake")
    map_file = folder / f"{DEMO_MAP}.json"
    locations = write_demo_map(map_file, 120)
    with demo_streetview(locations):
        for args in (["ingest", str(map_file)], ["fetch", "--map", DEMO_MAP, "--size", "256x256", "--qps", "0"],
                     ["embed", "--map", DEMO_MAP, "--model", "baseline"], ["cluster", "--map", DEMO_MAP, "--k", "4..6"]):
            assert main(["--lake", lake_uri, "--json", *args]) == 0, args
    lake = open_lake(lake_uri)
    run_id = lake.query("SELECT run_id FROM cluster_runs WHERE k = 5").column(0)[0].as_py()
    result = build_report(lake, run_id, folder / "report")
    return Path(result.html), {"clusters": result.clusters, "lookalikes": result.lookalikes, "png": result.png,
                               "thumbnails": result.thumbnails}


@pytest.mark.parametrize("which", ["demo_report", "report"])
def test_report_renders_in_chromium_without_errors(chromium, which, request, tmp_path):
    html, facts = request.getfixturevalue(which)
    done = run_chromium(chromium, tmp_path / "profile", html.as_uri(), "--dump-dom")
    assert done.returncode == 0, done.stderr[-800:]
    dom = done.stdout
    attrs = html_attrs(dom)
    assert attrs.get("data-rendered") == "1", "the page script ran to the end"
    assert int(attrs["data-points"]) >= 110
    assert int(attrs["data-painted"]) > 200, "the map canvas has coloured points on it"
    if which == "demo_report":  # Chile: its coast and the Andes border are drawn under the points
        assert int(attrs["data-outlines"]) > 5
    assert re.search(r'<pre id="js-errors"></pre>', dom), re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.DOTALL).group(1)
    assert console_errors(done.stderr) == []
    # legend and every cluster section, each with its contact sheet
    assert len(re.findall(r'<li data-cluster="\d+"', dom)) == facts["clusters"]
    for c in range(facts["clusters"]):
        section = re.search(rf'<div class="cluster" id="cluster-{c}" data-cluster="{c}"(.*?)(?=<div class="cluster" |</div></section>)', dom, re.DOTALL)
        assert section, f"cluster {c} has a section"
        assert section.group(1).count('class="loc typical"') >= 2
        assert section.group(1).count('class="loc edge"') >= 1
        assert "km" in section.group(1) and "locations" in section.group(1)
    assert dom.count('class="pair"') == facts["lookalikes"] > 0
    assert 'id="comparisons"' in dom
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in dom  # both runs belong to a k-sweep


def test_pinned_location_shows_its_views(chromium, report, tmp_path):
    html, _ = report
    data = re.search(r'id="report-data">(.*?)</script>', html.read_text(encoding="utf-8"), re.DOTALL).group(1)
    found = re.search(r'"id":"([^"]+)","p":(\d+),[^{]*?"views":\[\{"h":0', data)
    sample, point = found.group(1), found.group(2)
    done = run_chromium(chromium, tmp_path / "profile", f"{html.as_uri()}#pin={sample}&cluster=1", "--dump-dom")
    dom = done.stdout
    pinned = re.search(r'<div id="pinned">(.*?)</div>\s*</aside>', dom, re.DOTALL).group(1)
    assert "Cluster" in pinned and re.search(r"-?\d+\.\d{5}, -?\d+\.\d{5}", pinned)
    assert pinned.count("<img") == 4 and "data:image/jpeg;base64," in pinned
    assert re.search(r'<li data-cluster="1"[^>]*class="on"', dom)
    assert html_attrs(dom)["data-atlas-pinned"] == point, "the pinned place is ringed on the atlas too (linked views)"
    assert console_errors(done.stderr) == []


def test_screenshot_is_not_blank(chromium, demo_report, tmp_path):
    html, facts = demo_report
    assert facts["thumbnails"] > 20, "the demo's fetched views are in the page"
    shot = Path(os.environ.get("SVCLUSTER_REPORT_SHOT", tmp_path / "shot.png"))
    done = run_chromium(chromium, tmp_path / "profile", html.as_uri(), f"--screenshot={shot}", "--window-size=1280,1200")
    assert shot.is_file(), done.stderr[-800:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (1200, 1280)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500, "a page with text, a map and thumbnails"
    # the map's cluster colours are on screen (first cluster: #1f77b4)
    blue = (np.abs(img.astype(int) - (0x1F, 0x77, 0xB4)).sum(axis=2) < 40).sum()
    assert blue > 100


def test_page_errors_are_reported(chromium, report, tmp_path):
    """The error capture the tests rely on works: a broken page shows its error."""
    html, _ = report
    broken = tmp_path / "broken.html"
    broken.write_text(html.read_text(encoding="utf-8").replace('"clusters":[', '"clusters":null,"x":[', 1), encoding="utf-8")
    done = run_chromium(chromium, tmp_path / "profile", broken.as_uri(), "--dump-dom")
    errors = re.search(r'<pre id="js-errors">(.*?)</pre>', done.stdout, re.DOTALL).group(1)
    assert "TypeError" in errors or "null" in errors
    assert console_errors(done.stderr), "Chromium's log shows the uncaught error too"
    assert html_attrs(done.stdout).get("data-rendered") is None


def test_25_clusters_render_with_shapes_and_thumbnails_link_to_street_view(chromium, tmp_path):
    """Past 20 clusters the legend and the map use a second cue (the marker's shape), and every
    thumbnail is a link to Street View at its panorama and heading (issue 15.14)."""
    from svcluster.tasks.lake.store import open_lake
    from tests.report_helpers import write_run

    lake = open_lake(str(tmp_path / "lake"))
    m = synthetic_map(lake, tmp_path, 500, dim=8, views=500)
    run_id = write_run(lake, m.name, m.location_ids, m.vectors, np.arange(500) % 25, m.model)
    result = build_report(lake, run_id, tmp_path / "report")
    done = run_chromium(chromium, tmp_path / "profile", Path(result.html).as_uri(), "--dump-dom")
    dom = done.stdout
    assert html_attrs(dom).get("data-rendered") == "1" and console_errors(done.stderr) == []
    assert re.search(r'<pre id="js-errors"></pre>', dom)
    assert int(html_attrs(dom)["data-painted"]) > 200
    legend = re.findall(r'<li data-cluster="(\d+)"[^>]*><span class="swatch (\w+)"', dom)
    assert len(legend) == 25
    assert {shape for c, shape in legend if int(c) < 20} == {"circle"} and {shape for c, shape in legend if int(c) >= 20} == {"square"}
    links = re.findall(r'<a class="streetview" href="([^"]+)"[^>]*><img', dom)
    assert result.thumbnails > 0 and len(links) == dom.count('<img src="data:image/jpeg') >= result.thumbnails  # look-alikes show some twice
    assert all("map_action=pano" in u and "&amp;pano=pano" in u and "&amp;heading=" in u for u in links)


def test_atlas_renders_and_its_selection_downloads_a_map(chromium, report, tmp_path):
    """The atlas (issue 19.1): one canvas point per place, coloured by cluster; a box selection
    (the same code as a drag, driven by the link ``#atlas-box=``) lists the places inside and
    its download link holds them as a map-making.app map (customCoordinates with pano ids)."""
    import json
    from urllib.parse import unquote

    html, facts = report
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html.read_text(encoding="utf-8"), re.DOTALL).group(1))
    atlas = data["atlas"]
    x, y = np.asarray(atlas["x"]), np.asarray(atlas["y"])
    xs = np.sort(x)
    gap = int(np.argmax(np.diff(xs)[len(xs) // 4: 3 * len(xs) // 4])) + len(xs) // 4
    cut = round(float(xs[gap] + xs[gap + 1]) / 2, 4)  # a box edge away from every point
    inside = x < cut
    assert 0 < inside.sum() < len(x)
    done = run_chromium(chromium, tmp_path / "profile", f"{html.as_uri()}#atlas-box=-1.2,-1.2,{cut},1.2", "--dump-dom")
    dom, attrs = done.stdout, html_attrs(done.stdout)
    assert attrs.get("data-rendered") == "1" and console_errors(done.stderr) == []
    assert re.search(r'<pre id="js-errors"></pre>', dom)
    assert int(attrs["data-atlas-points"]) == len(x) == 400
    assert int(attrs["data-atlas-painted"]) > 200, "the atlas canvas has coloured points on it"
    link = re.search(r'<a id="atlas-download" class="button" href="data:application/json;charset=utf-8,([^"]+)" download="([^"]+)" data-count="(\d+)"', dom)
    assert link, "the selection has a download link"
    assert link.group(2) == "chile-atlas-selection.json" and int(link.group(3)) == int(inside.sum())
    doc = json.loads(unquote(link.group(1)).replace("&amp;", "&"))
    coords = doc["customCoordinates"]
    assert len(coords) == int(inside.sum())
    want = {(round(a, 5), round(b, 5)) for a, b, keep in zip(data["points"]["lat"], data["points"]["lng"], inside) if keep}
    assert {(c["lat"], c["lng"]) for c in coords} == want
    assert all(c["panoId"] and isinstance(c["heading"], (int, float)) and c["extra"]["tags"][0].startswith("k5-c") for c in coords)
    assert dom.count("<tr data-point=") == min(200, int(inside.sum()))


# ---- the atlas with a real mouse (issue 19.1) ------------------------------------------------
# Pixel positions come from the page's own data: a point's atlas coordinates (x, y in [-1, 1], y
# up) scaled into the canvas as atlas.js lays it out (a square of the canvas' shorter side less
# ATLAS_PAD on each side, centred), and a place's map position from the map's bounds through the
# report's equirectangular projection (geo.Projection, which the PNG uses too).
ATLAS_PAD = 10
SHIFT = 8  # CDP's modifier bit for the shift key


def page_json(html: Path) -> dict:
    import json

    return json.loads(re.search(r'id="report-data">(.*?)</script>', html.read_text(encoding="utf-8"), re.DOTALL).group(1))


def atlas_on_screen(b: Browser, data: dict) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float, float]]:
    """Every point's viewport position on the atlas canvas (scrolled into view), and the canvas rect."""
    rect = b.evaluate("(() => { const c = document.getElementById('atlas'); c.scrollIntoView({block: 'center'});"
                      " const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
    left, top, w, h = rect
    half = (min(w, h) - 2 * ATLAS_PAD) / 2
    x = left + w / 2 + np.asarray(data["atlas"]["x"]) * half
    y = top + h / 2 - np.asarray(data["atlas"]["y"]) * half
    return x, y, tuple(rect)


def next_frames(b: Browser) -> None:
    b.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def test_atlas_hover_shows_views_and_click_pins_the_place_on_the_map(chromium, report, tmp_path):
    """Hover a sampled place's pixel: the atlas panel shows that place's views; click it: the
    place is pinned (its views beside the map) and ringed on the geographic map and the atlas."""
    from svcluster.tasks.report.geo import Projection

    html, _ = report
    data = page_json(html)
    with Browser(chromium, tmp_path / "profile", html.as_uri()) as b:
        b.wait_for("document.documentElement.getAttribute('data-rendered') === '1'")
        x, y, _ = atlas_on_screen(b, data)
        # a sampled place with views that no other point sits within 3 px of
        d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        np.fill_diagonal(d, np.inf)
        sample = next(s for s in data["samples"] if len(s["views"]) == 4 and d[s["p"]].min() > 3)
        j = sample["p"]
        b.mouse("mouseMoved", x[j] - 40, y[j] - 40)
        b.mouse("mouseMoved", x[j], y[j])
        tip = b.evaluate("(() => { const t = document.getElementById('atlas-tooltip');"
                         " return {hidden: t.hidden, text: t.textContent, src: [...t.querySelectorAll('img')].map(i => i.getAttribute('src'))}; })()")
        assert not tip["hidden"]
        assert tip["src"] == [v["src"] for v in sample["views"]], "the hover panel shows this place's four views"
        assert f"{sample['lat']:.5f}, {sample['lng']:.5f}" in tip["text"]
        assert f"Cluster {data['clusters'][sample['c']]['id']}" in tip["text"]

        b.click(x[j], y[j])
        next_frames(b)
        state = b.evaluate("(() => { const p = document.getElementById('pinned'); return {text: p.textContent,"
                           " src: [...p.querySelectorAll('img')].map(i => i.getAttribute('src')),"
                           " map: document.documentElement.getAttribute('data-map-pinned'),"
                           " atlas: document.documentElement.getAttribute('data-atlas-pinned')}; })()")
        assert f"{sample['lat']:.5f}, {sample['lng']:.5f}" in state["text"] and f"Cluster {data['clusters'][sample['c']]['id']}" in state["text"]
        assert state["src"] == [v["src"] for v in sample["views"]]
        assert state["map"] == str(j) and state["atlas"] == str(j), "pinned on the map and ringed on the atlas (linked views)"
        # the map draws a black ring around the place: read the map canvas' pixels on that ring
        m = data["map"]
        px, py = Projection(*m["bounds"], width=m["width"], height=m["height"], pad=m["pad"]).project(
            np.array([data["points"]["lat"][j]]), np.array([data["points"]["lng"][j]]))
        ring = b.evaluate(f"""(() => {{ const c = document.getElementById('map'), k = c.width / {m['width']},
            g = c.getContext('2d'), out = [];
            for (let a = 0; a < 16; a++) {{ const t = a * Math.PI / 8;
              for (const r of [7, 7.5, 8]) {{ const d = g.getImageData(Math.round(({px[0]} + r * Math.cos(t)) * k), Math.round(({py[0]} + r * Math.sin(t)) * k), 1, 1).data;
                if (d[0] + d[1] + d[2] < 150) {{ out.push(a); break; }} }} }}
            return out.length; }})()""")
        assert ring >= 12, f"the pinned place is ringed on the map ({ring} of 16 directions dark)"
        assert [line for line in b.log if ":CONSOLE" in line and "ERROR" in line] == []
        assert b.evaluate("document.getElementById('js-errors').textContent") == ""


def polygon_contains(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of the points (x, y) lie inside the polygon (rows of (x, y))."""
    inside = np.zeros(len(x), dtype=bool)
    for (xa, ya), (xb, yb) in zip(poly, np.roll(poly, 1, axis=0)):
        crosses = (ya > y) != (yb > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside ^= crosses & (x < (xb - xa) * (y - ya) / (yb - ya) + xa)
    return inside


def edge_distance(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point's distance to the polygon's outline."""
    best = np.full(len(x), np.inf)
    for a, b in zip(poly, np.roll(poly, 1, axis=0)):
        ab = b - a
        t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(float(ab @ ab), 1e-12), 0, 1)
        best = np.minimum(best, np.hypot(x - a[0] - t * ab[0], y - a[1] - t * ab[1]))
    return best


def test_atlas_lasso_and_box_select_a_planted_group_and_download_it(chromium, report, tmp_path):
    """A lasso dragged around one planted group (a band of the synthetic map, one cluster of the
    k=5 run) lists exactly its places; the download button, clicked, saves a map-making.app file
    holding exactly those locations as the lake has them; a shift+drag box does the same."""
    import json

    html, facts = report
    data = page_json(html)
    clusters = data["clusters"]
    lake = facts["lake"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Browser(chromium, tmp_path / "profile", html.as_uri()) as b:
        b.wait_for("document.documentElement.getAttribute('data-rendered') === '1'")
        b.allow_downloads(downloads)
        x, y, (left, top, w, h) = atlas_on_screen(b, data)
        c = np.asarray(data["points"]["c"])
        lassos = []
        lassos = []  # a group whose ellipse holds it alone, clear of every point
        for ci in range(len(clusters)):
            own = c == ci
            cx, cy = (x[own].min() + x[own].max()) / 2, (y[own].min() + y[own].max()) / 2
            rx, ry = (x[own].max() - x[own].min()) / 2 * 1.42 + 6, (y[own].max() - y[own].min()) / 2 * 1.42 + 6
            t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
            poly = np.c_[cx + rx * np.cos(t), cy + ry * np.sin(t)]
            on_canvas = (poly[:, 0] > left + 1).all() and (poly[:, 0] < left + w - 1).all() and (poly[:, 1] > top + 1).all() and (poly[:, 1] < top + h - 1).all()
            if on_canvas and np.array_equal(polygon_contains(poly, x, y), own) and edge_distance(poly, x, y).min() > 2:
                lassos.append((ci, poly))
        assert lassos, "some planted group can be lassoed alone"
        ci, poly = lassos[0]
        b.drag([tuple(p) for p in poly] + [tuple(poly[0])])
        rows = b.evaluate("[...document.querySelectorAll('#atlas-selection tr[data-point]')].map(t => +t.getAttribute('data-point'))")
        want = np.flatnonzero(c == ci)
        assert sorted(rows) == want.tolist()[:200], "the selection lists exactly the lassoed group"
        count = b.evaluate("document.getElementById('atlas-download').getAttribute('data-count')")
        assert int(count) == len(want)

        b.evaluate("document.getElementById('atlas-download').scrollIntoView({block: 'center'})")
        r = b.evaluate("(() => { const r = document.getElementById('atlas-download').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        b.click(*r)
        name = f"{data['atlas']['map_name']}-atlas-selection.json"
        for _ in range(200):  # Chromium writes NAME.crdownload, then renames it
            if (downloads / name).is_file():
                break
            time.sleep(0.05)
        doc = json.loads((downloads / name).read_text(encoding="utf-8"))
        coords = doc["customCoordinates"]
        lake_rows = lake.query(
            "SELECT l.lat, l.lng, arg_min(l.pano_id, l.position) AS pano_id FROM cluster_assignments a"
            " JOIN locations l ON l.location_id = a.location_id AND l.map = $map"
            " WHERE a.run_id = $run AND a.cluster = $cluster GROUP BY l.location_id, l.lat, l.lng",
            {"run": facts["run"], "cluster": clusters[ci]["id"], "map": data["atlas"]["map_name"]},
        ).to_pylist()
        assert len(coords) == len(lake_rows) == len(want)
        assert sorted((c["lat"], c["lng"], c["panoId"]) for c in coords) == sorted(
            (round(r["lat"], 5), round(r["lng"], 5), r["pano_id"]) for r in lake_rows), "exactly the group's locations, as the lake has them"
        assert {c["extra"]["tags"][0] for c in coords} == {f"k5-c{clusters[ci]['id']}"}

        # shift+drag: a box around the same group's bounding box
        own = c == ci
        x0, x1, y0, y1 = x[own].min() - 3, x[own].max() + 3, y[own].min() - 3, y[own].max() + 3
        expect = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        b.evaluate("document.getElementById('atlas').scrollIntoView({block: 'center'})")
        b.drag([(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2), (x1, y1)], modifiers=SHIFT)
        rows = b.evaluate("[...document.querySelectorAll('#atlas-selection tr[data-point]')].map(t => +t.getAttribute('data-point'))")
        assert sorted(rows) == np.flatnonzero(expect).tolist()[:200] and expect[own].all()
        # a triangle whose long side cuts through a group: the lasso's shape decides, not its box
        for gi, shift in ((gi, shift) for gi, _ in lassos for shift in np.linspace(-0.3, 0.3, 41)):
            g = np.flatnonzero(c == gi)
            x0, x1, y0, y1 = x[g].min() - 4, x[g].max() + 4, y[g].min() - 4, y[g].max() + 4
            tri = np.round([(x0, y0), (x1 + shift * (x1 - x0), y0), (x0, y1 + shift * (y1 - y0))])  # whole pixels
            expect = polygon_contains(tri, x, y)
            in_box = (x >= tri[:, 0].min()) & (x <= tri[:, 0].max()) & (y >= tri[:, 1].min()) & (y <= tri[:, 1].max())
            if edge_distance(tri, x, y).min() > 1 and 0 < expect.sum() < in_box.sum():
                break
        else:
            pytest.fail("no triangle clear of every point")
        b.drag([tuple(tri[k] + (tri[(k + 1) % 3] - tri[k]) * f) for k in range(3) for f in (0.0, 0.5)] + [tuple(tri[0])])
        rows = b.evaluate("[...document.querySelectorAll('#atlas-selection tr[data-point]')].map(t => +t.getAttribute('data-point'))")
        assert sorted(rows) == np.flatnonzero(expect).tolist()[:200]
        assert b.evaluate("document.getElementById('js-errors').textContent") == ""
