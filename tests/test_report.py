"""The run report: what the page's data says (checked against the lake), look-alikes,
comparisons, the k-sweep, the PNG, the CLI and the Prefect artifact summary."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from svcluster.flows.cli import main
from svcluster.tasks.cluster.runs import previous_version
from svcluster.tasks.report.page import build_report, report_artifacts
from svcluster.tasks.report.data import Points, find_lookalikes
from svcluster.tasks.report.geo import haversine_km
from svcluster.tasks.demo.sample import BANDS
from tests.report_helpers import synthetic_map, write_run, write_sweep


def page_json(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
    assert m, "the page embeds its data"
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def swept_lake(tmp_path_factory):
    """1000 locations with views and embeddings, and a k-sweep of 3 runs (v1 k=3, v2 k=4, v3 k=5),
    in one lake shared by the tests that only read it (and write reports)."""
    from svcluster.tasks.lake.store import open_lake

    folder = tmp_path_factory.mktemp("swept")
    lake = open_lake(str(folder / "lake"))
    m = synthetic_map(lake, folder, 1000, dim=32, views=700)
    return lake, m, write_sweep(lake, m)


@pytest.fixture
def swept(swept_lake):
    return swept_lake[1], swept_lake[2]


@pytest.fixture
def lake(request, tmp_path):
    """The shared swept lake for tests using ``swept``; a fresh one otherwise."""
    if "swept" in request.fixturenames:
        return request.getfixturevalue("swept_lake")[0]
    from svcluster.tasks.lake.store import open_lake

    return open_lake(str(tmp_path / "lake"))


def test_report_page_holds_map_clusters_lookalikes_and_run(lake, tmp_path, swept):
    m, runs = swept
    result = build_report(lake, "chile@v3", tmp_path / "out")
    assert result.run == "chile@v3" and result.run_id == runs[5]
    assert result.locations == 1000 and result.clusters == 5
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    # self-contained: no external script, stylesheet, image or font
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="?https?:', html)
    assert "<canvas" in html and html.count("<script") == 3
    data = page_json(html)

    # every location is a point, with its own coordinates and cluster
    pts = data["points"]
    assert len(pts["lat"]) == 1000
    band_of_id = dict(zip(m.location_ids, m.band.tolist()))
    assert sorted(c["size"] for c in data["clusters"]) == sorted(np.bincount(m.band).tolist())
    assert sum(c["size"] for c in data["clusters"]) == 1000
    assert [c["id"] for c in data["clusters"]] == [0, 1, 2, 3, 4]
    assert len({c["color"] for c in data["clusters"]}) == 5

    samples = data["samples"]
    lat_of = dict(zip(m.location_ids, m.lat.tolist()))
    for c in data["clusters"]:
        band = BANDS[c["id"]]
        # dominant regions are the band's own region codes
        assert {r for r, _ in c["regions"]} <= set(band.region_codes)
        assert c["tags"] and c["tags"][0][0] == band.name
        # geographic spread: the median km from the cluster's geographic centroid
        idx = np.flatnonzero(m.band == c["id"])
        km = haversine_km(m.lat[idx], m.lng[idx], c["centroid"][0], c["centroid"][1])
        assert c["spread_km"] == pytest.approx(float(np.median(km)), rel=0.01, abs=1.0)
        # contact sheet: the typical samples are nearer the centroid than the edge ones
        typical = [samples[i] for i in c["typical"]]
        edges = [samples[i] for i in c["edges"]]
        assert len(typical) >= 2 and len(edges) >= 1
        assert all(s["c"] == data["clusters"].index(c) for s in typical + edges)
        assert all(band_of_id[s["id"]] == c["id"] for s in typical + edges)
        assert all(s["lat"] == pytest.approx(lat_of[s["id"]], abs=1e-5) for s in typical)
        d_typ = max(pts["d"][s["p"]] for s in typical)
        d_edge = min(pts["d"][s["p"]] for s in edges)
        assert d_typ <= d_edge
    # thumbnails: only for sampled locations that have views (first 700 do), small JPEGs
    view_ids = set(m.location_ids[:700])
    for s in samples:
        if s["id"] in view_ids:
            assert [v["h"] for v in s["views"]] == [0, 90, 180, 270]
            head, b64 = s["views"][0]["src"].split(",", 1)
            assert head == "data:image/jpeg;base64"
            import base64

            im = Image.open(io.BytesIO(base64.b64decode(b64)))
            assert max(im.size) == 160
        else:
            assert s["views"] == []
    assert result.thumbnails == sum(len(s["views"]) for s in samples)

    # look-alikes: same cluster, real distance between them, cosine of their embeddings
    vec_of = dict(zip(m.location_ids, m.vectors))
    assert data["lookalikes"]
    kms = [p["km"] for p in data["lookalikes"]]
    assert kms == sorted(kms, reverse=True)
    for p in data["lookalikes"]:
        a, b = samples[p["a"]], samples[p["b"]]
        assert a["c"] == b["c"] == p["c"]
        assert p["km"] == pytest.approx(float(haversine_km(a["lat"], a["lng"], b["lat"], b["lng"])), abs=0.5)
        assert p["sim"] == pytest.approx(float(vec_of[a["id"]] @ vec_of[b["id"]]), abs=1e-3)

    # run: parameters, metrics, the sweep plot and comparisons
    assert data["run"]["k"] == 5 and data["run"]["name"] == "chile@v3" and data["run"]["model"] == "baseline"
    assert data["params"]["n_init"] == 4
    assert data["sweep_svg"].startswith("<svg") and data["sweep_svg"].count("<circle") == 6
    assert "this run" in data["sweep_svg"]
    assert data["naming_note"] == "no names: the baseline embedder has no text tower"
    comparisons = {c["kind"]: c for c in data["comparisons"]}
    # the map's only clustering is this sweep: v2 (k=4), made just before, is a sibling, not a version
    assert "previous" not in comparisons
    assert comparisons["tags"]["locations"] > 200 and comparisons["tags"]["ari"] == pytest.approx(1.0, abs=1e-6)


def test_cluster_map_png_is_drawn_in_cluster_colours(lake, tmp_path, swept):
    build_report(lake, "chile@v3", tmp_path / "out")
    png = Image.open(tmp_path / "out" / "cluster_map.png").convert("RGB")
    assert png.width >= 600 and png.height >= 400
    data = page_json((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    colours = np.asarray(png).reshape(-1, 3)
    for c in data["clusters"]:
        rgb = tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5))
        assert (colours == rgb).all(axis=1).sum() > 30, f"cluster {c['id']} is drawn"


def test_lookalikes_find_the_far_apart_twins():
    """Two identical-looking locations at the two ends of a cluster are its top pair."""
    rng = np.random.default_rng(0)
    n, dim = 3000, 16
    lat = rng.uniform(-30, -20, n)
    lng = rng.uniform(-71, -69, n)
    vecs = rng.normal(size=(n, dim)) + 4 * np.eye(dim)[0]
    twin = np.eye(dim)[0] * 5 + np.eye(dim)[1]
    lat[[10, 20]], lng[[10, 20]] = (-19.0, -41.0), (-70.0, -72.0)
    vecs[[10, 20]] = twin
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"L{i:05d}" for i in range(n)]
    pts = Points(ids, np.zeros(n, np.int32), np.zeros(n, np.float32), lat, lng, ["X"] * n, [[] for _ in range(n)])
    typ = (vecs @ vecs.mean(axis=0)).astype(np.float32)
    pairs = find_lookalikes(pts, vecs.astype(np.float32), np.arange(n), typ)
    assert (pairs[0].a, pairs[0].b) == ("L00010", "L00020")
    assert pairs[0].km == pytest.approx(float(haversine_km(-19.0, -70.0, -41.0, -72.0)), abs=0.5)
    assert pairs[0].similarity == pytest.approx(1.0, abs=1e-5)


def test_report_without_views_or_embeddings_still_complete(lake, tmp_path):
    m = synthetic_map(lake, tmp_path, 80, dim=8, views=0, model="baseline")
    run_id = write_run(lake, m.name, m.location_ids, m.vectors, m.band, "other-model")  # no such embeddings
    result = build_report(lake, run_id, tmp_path / "r")
    data = page_json((tmp_path / "r" / "report.html").read_text(encoding="utf-8"))
    assert result.thumbnails == 0 and data["lookalikes"] == []
    assert "no embeddings" in data["lookalike_note"]
    assert data["sweep_svg"] == "" and len(data["clusters"]) == 5
    assert {c["kind"] for c in data["comparisons"]} == {"tags"}  # first run of the map: no previous


def test_report_compares_with_the_maps_previous_version_never_a_sibling_of_its_sweep(lake, tmp_path):
    """The report's previous version is the run summary's (tasks/cluster/runs.py previous_version):
    the map's latest earlier run with the same k, else of any k, never a run of the same sweep."""
    m = synthetic_map(lake, tmp_path, 300, dim=8, views=0)
    first = write_run(lake, m.name, m.location_ids, m.vectors, np.minimum(m.band, 3), m.model, created_offset_s=-60)  # v1, k=4
    sweep = write_sweep(lake, m)  # v2 k=3, v3 k=4, v4 k=5: written after v1
    for k, run_id in sweep.items():
        # v3 has v1's k; v2 and v4 have no earlier run of their k, so the latest before the sweep
        assert previous_version(lake, m.name, run_id).name == "chile@v1", k
    build_report(lake, sweep[5], tmp_path / "r")
    data = page_json((tmp_path / "r" / "report.html").read_text(encoding="utf-8"))
    previous = {c["kind"]: c for c in data["comparisons"]}["previous"]
    assert previous["against"] == "chile@v1" and previous["locations"] == 300
    assert previous["ari"] == pytest.approx(adjusted_rand_score(np.minimum(m.band, 3), m.band), abs=1e-3)
    assert previous_version(lake, m.name, first) is None


def test_report_command_json_and_errors(lake, tmp_path, swept, capsys):
    code = main(["--lake", lake.uri, "report", "chile@v2", "--out", str(tmp_path / "cli"), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run"] == "chile@v2" and doc["clusters"] == 4 and doc["locations"] == 1000
    assert (tmp_path / "cli" / "report.html").is_file() and (tmp_path / "cli" / "cluster_map.png").is_file()
    code = main(["--lake", lake.uri, "report", "chile@v9", "--out", str(tmp_path / "none")])
    assert code == 1
    assert "no cluster run named 'chile@v9'" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_report_artifacts_markdown_and_png_in_the_lake(lake, tmp_path, swept):
    m, runs = swept
    art = report_artifacts(lake, runs[4])
    markdown, png_path = art  # unpacks like a tuple
    assert png_path.endswith(f"reports/{runs[4]}/cluster_map.png")
    assert lake.exists(f"reports/{runs[4]}/cluster_map.png") and lake.exists(f"reports/{runs[4]}/report.html")
    Image.open(io.BytesIO(lake.read_bytes(f"reports/{runs[4]}/cluster_map.png"))).verify()
    assert "# Clusters of chile@v2" in markdown and "![cluster map](file://" in markdown
    rows = [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    sizes = np.bincount(np.minimum(m.band, 3))
    assert rows == [f"| {c} | {sizes[c]:,} | – |" for c in range(4)]


# ---- issue 15: k and non-empty clusters, stale runs, Street View links, > 20 clusters ---------
def test_report_of_a_degenerate_run_says_k_and_the_non_empty_clusters(lake, tmp_path, capsys):
    from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
    from tests.report_helpers import write_embeddings

    m = synthetic_map(lake, tmp_path, 60, dim=8, views=10)
    write_embeddings(lake, m.location_ids, np.repeat(np.eye(8, dtype=np.float32)[:3], 20, axis=0), "dup")
    run = cluster_map(lake, "chile", ClusterOptions(model="dup", k=5)).run
    assert main(["--lake", lake.uri, "report", run.name, "--out", str(tmp_path / "r"), "--no-names"]) == 0
    out = capsys.readouterr().out
    assert "in 3 non-empty clusters (k=5)" in out and "warning: only 3 of k=5 clusters hold a place" in out
    data = page_json((tmp_path / "r" / "report.html").read_text(encoding="utf-8"))
    assert data["title"].startswith(f"{run.name} · k=5 · 3 non-empty clusters of 60 locations")
    assert data["notices"] == [f"warning: {run.warnings[0]}"]
    assert data["run"]["nonempty_clusters"] == 3 and data["run"]["stale"] == "no"
    result = build_report(lake, run.name, tmp_path / "r2", name=False)
    assert (result.k, result.clusters) == (5, 3)


def test_report_of_a_run_of_an_earlier_map_version_says_so(lake, tmp_path, capsys):
    from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
    from svcluster.tasks.ingest.step import ingest_map

    m = synthetic_map(lake, tmp_path, 80, dim=8, views=0)
    run = cluster_map(lake, "chile", ClusterOptions(k=3)).run
    build_report(lake, run.name, tmp_path / "fresh", name=False)
    assert page_json((tmp_path / "fresh" / "report.html").read_text(encoding="utf-8"))["notices"] == []
    doc = json.loads((tmp_path / "chile.json").read_text(encoding="utf-8"))
    doc["customCoordinates"] = doc["customCoordinates"][:70]  # the user dropped ten locations
    (tmp_path / "smaller.json").write_text(json.dumps(doc), encoding="utf-8")
    ingest_map(lake, tmp_path / "smaller.json", "chile")
    assert main(["--lake", lake.uri, "report", run.name, "--out", str(tmp_path / "stale"), "--no-names"]) == 0
    assert f"{run.name} was made on an earlier version of map 'chile'" in capsys.readouterr().out
    data = page_json((tmp_path / "stale" / "report.html").read_text(encoding="utf-8"))
    assert data["notices"][0].startswith(f"{run.name} was made on an earlier version of map 'chile'")
    assert data["run"]["stale"].startswith("yes")
    markdown = report_artifacts(lake, run.name, tmp_path / "art").markdown
    assert "earlier version of map 'chile'" in markdown


def test_thumbnails_link_to_street_view_at_their_pano_and_heading(lake, tmp_path, swept):
    from urllib.parse import parse_qs, urlparse

    m, runs = swept
    build_report(lake, "chile@v3", tmp_path / "out")
    data = page_json((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    position = {lid: i for i, lid in enumerate(m.location_ids)}
    linked = 0
    for s in data["samples"]:
        for v in s["views"]:
            url = urlparse(v["url"])
            q = {k: vs[0] for k, vs in parse_qs(url.query).items()}
            assert (url.netloc, url.path) == ("www.google.com", "/maps/@")
            assert q["api"] == "1" and q["map_action"] == "pano"
            assert q["pano"] == f"pano{position[s['id']]}" and q["heading"] == str(v["h"])
            assert q["viewpoint"] == f"{s['lat']:.6f},{s['lng']:.6f}"
            linked += 1
    assert linked > 40
    assert 'el("a", { class: "streetview", href: v.url' in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def many_cluster_run(lake, folder, k: int = 25):
    m = synthetic_map(lake, folder, 500, dim=8, views=50)
    labels = np.arange(500) % k
    return m, write_run(lake, m.name, m.location_ids, m.vectors, labels, m.model)


def test_more_than_20_clusters_keep_distinct_colour_and_shape(lake, tmp_path):
    m, run_id = many_cluster_run(lake, tmp_path)
    build_report(lake, run_id, tmp_path / "many")
    data = page_json((tmp_path / "many" / "report.html").read_text(encoding="utf-8"))
    styles = [(c["color"], c["marker"]) for c in data["clusters"]]
    assert len(styles) == 25 and len(set(styles)) == 25
    assert len({c for c, _ in styles}) == 20  # the palette repeats ...
    assert [mk for _, mk in styles[:20]] == ["circle"] * 20 and [mk for _, mk in styles[20:]] == ["square"] * 5  # ... the shape does not
    # the PNG legend and dots draw the same shapes: cluster 20 (square) and cluster 0 (circle)
    png = np.asarray(Image.open(tmp_path / "many" / "cluster_map.png").convert("RGB"))
    assert png.shape[0] > 25 * 26  # a legend line per cluster


def test_png_markers_have_their_shapes():
    from svcluster.tasks.report.map_png import LegendEntry, render_cluster_map
    from svcluster.tasks.report.geo import marker_mask

    entries = [LegendEntry("#1f77b4", "0", 1, "circle"), LegendEntry("#1f77b4", "20", 1, "triangle")]
    png = render_cluster_map(np.array([-30.0, -40.0]), np.array([-72.0, -68.0]), np.array([0, 1]), entries, "t")
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    blue = (img == (0x1F, 0x77, 0xB4)).all(axis=2)
    map_part = blue[:, : img.shape[1] - 330]  # the dots, not the legend
    ys, xs = np.nonzero(map_part)
    middle = (xs.min() + xs.max()) / 2
    left, right = xs < middle, xs >= middle
    shapes = []
    for side in (left, right):
        y0, x0 = ys[side].min(), xs[side].min()
        shapes.append({(int(x - x0), int(y - y0)) for x, y in zip(xs[side], ys[side])})

    def normalised(marker):
        mask = marker_mask(marker, 3)  # two points: the largest dots
        mx, my = min(d[0] for d in mask), min(d[1] for d in mask)
        return {(dx - mx, dy - my) for dx, dy in mask}
    by_lng = sorted(zip((-72.0, -68.0), ("circle", "triangle")))
    assert shapes[0] == normalised(by_lng[0][1]) and shapes[1] == normalised(by_lng[1][1])
    assert shapes[0] != shapes[1]
