"""The geography of clusters as SQL: size, centroid, spread in km, and regions held by one cluster."""

from __future__ import annotations

import math

import pytest

from tests.cluster_data import ingest_objects, write_labels


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def loc(i: int, lat: float, lng: float, state: str | None = None) -> dict:
    o = {"lat": lat, "lng": lng, "panoId": None, "heading": 0, "pitch": 0, "zoom": 0, "extra": {"panoId": f"p{i:05d}xxxxxxxxxxxxxxxxx"}}
    if state:
        o["stateCode"] = state
    return o


@pytest.fixture
def geo_run(lake, tmp_path):
    objs = [loc(i, -27.0 + i * 0.1, -70.0, "AT") for i in range(10)]  # the Atacama: 9 in cluster 0, 1 in 1
    objs += [loc(10 + i, lat, -72.3) for i, lat in enumerate((-39.6, -40.2, -40.5, -40.8))]  # no region code: grid cells
    objs += [loc(14, 0.0, 179.5), loc(15, 0.0, -179.5)]  # across the antimeridian
    ids = ingest_objects(lake, tmp_path, objs, "geo", envelope={"name": "geo"})
    labels = [0] * 9 + [1] + [1] * 4 + [2, 2]
    write_labels(lake, "geo", "georun", ids, labels)
    return lake, objs, labels


def test_cluster_geography(geo_run):
    lake, objs, labels = geo_run
    rows = {r["cluster"]: r for r in lake.query("SELECT * FROM cluster_geography WHERE run_id = 'georun'").to_pylist()}
    assert [rows[c]["size"] for c in (0, 1, 2)] == [9, 5, 2]
    assert rows[0]["share"] == pytest.approx(9 / 16)
    assert rows[0]["centroid_lat"] == pytest.approx(-26.6, abs=0.01) and rows[0]["centroid_lng"] == pytest.approx(-70.0, abs=1e-6)
    dists = sorted(haversine_km(o["lat"], o["lng"], rows[0]["centroid_lat"], rows[0]["centroid_lng"]) for o in objs[:9])
    assert rows[0]["median_km_to_centroid"] == pytest.approx(dists[4], rel=1e-3)
    assert rows[0]["max_km_to_centroid"] == pytest.approx(dists[-1], rel=1e-3)
    # the two points either side of the antimeridian have their centroid on it, not at lng 0
    assert abs(rows[2]["centroid_lng"]) == pytest.approx(180.0, abs=1e-6) and rows[2]["centroid_lat"] == pytest.approx(0.0, abs=1e-9)
    assert rows[2]["median_km_to_centroid"] == pytest.approx(haversine_km(0, 179.5, 0, 180), rel=1e-3)


def test_region_share_the_atacama_query(geo_run):
    lake, objs, labels = geo_run
    # "90% of the Atacama in one cluster", as a query
    atacama = lake.query(
        "SELECT dominant_cluster, dominant_share, locations, clusters FROM cluster_region_share "
        "WHERE run_id = 'georun' AND region = 'AT'"
    ).to_pylist()
    assert atacama == [{"dominant_cluster": 0, "dominant_share": pytest.approx(0.9), "locations": 10, "clusters": 2}]
    regions = {r["region"]: r for r in lake.query("SELECT * FROM cluster_region_share WHERE run_id = 'georun'").to_pylist()}
    # locations without a region code fall in 1-degree grid cells named by their south-west corner
    assert regions["cell -41.0,-73.0"]["locations"] == 3 and regions["cell -41.0,-73.0"]["dominant_share"] == 1.0
    assert regions["cell -41.0,-73.0"]["dominant_cluster"] == 1
    assert regions["cell -40.0,-73.0"]["locations"] == 1
    # another cell size through the macro
    coarse = {r["region"]: r["locations"] for r in lake.query("SELECT * FROM cluster_region_share_at(10.0) WHERE run_id = 'georun'").to_pylist()}
    assert coarse["cell -50.0,-80.0"] == 3 and coarse["cell -40.0,-80.0"] == 1 and coarse["AT"] == 10


def test_sizes_and_points_views(geo_run):
    lake, objs, labels = geo_run
    sizes = lake.query("SELECT cluster, size FROM cluster_sizes WHERE run_id = 'georun' ORDER BY cluster").to_pylist()
    assert [s["size"] for s in sizes] == [9, 5, 2]
    n = lake.query("SELECT count(*) FROM cluster_points WHERE run_id = 'georun' AND map = 'geo'").column(0)[0].as_py()
    assert n == 16
