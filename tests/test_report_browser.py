"""The report in a real headless Chromium (Debian's ``chromium``): it renders the map and every
cluster section without console errors, pins a location with its views, and a screenshot is
not blank. Chromium is installed here when missing and we are root; otherwise the test fails
with a clear message (never skipped)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svcluster.flows.cli import main
from svcluster.tasks.report.page import build_report
from tests.report_helpers import synthetic_map, write_sweep

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
)


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
    return Path(result.html), {"clusters": result.clusters, "lookalikes": result.lookalikes, "png": result.png}


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
