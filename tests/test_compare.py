"""Comparing runs with each other and with the map's own tags, on runs with known labels."""

from __future__ import annotations

from math import comb

import pytest

from svcluster.tasks.cluster.compare import compare_runs, compare_with_tags
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.export.step import export_map
from tests.cluster_data import ingest_objects, write_labels


def ari_by_hand(a: list[int], b: list[int]) -> float:
    """The adjusted Rand index from its contingency-table formula (Hubert & Arabie)."""
    n = len(a)
    cells: dict[tuple[int, int], int] = {}
    for x, y in zip(a, b):
        cells[(x, y)] = cells.get((x, y), 0) + 1
    rows = [sum(v for (x, _), v in cells.items() if x == r) for r in set(a)]
    cols = [sum(v for (_, y), v in cells.items() if y == c) for c in set(b)]
    index = sum(comb(v, 2) for v in cells.values())
    sr, sc = sum(comb(v, 2) for v in rows), sum(comb(v, 2) for v in cols)
    expected = sr * sc / comb(n, 2)
    return (index - expected) / ((sr + sc) / 2 - expected)


def objects(n: int, tags: list[list[str] | None] | None = None) -> list[dict]:
    out = []
    for i in range(n):
        o = {"lat": -20.0 - i * 0.5, "lng": -70.0, "panoId": f"pano{i:04d}xxxxxxxxxxxxxx", "heading": 0, "pitch": 0, "zoom": 0}
        if tags and tags[i] is not None:
            o["extra"] = {"tags": tags[i]}
        out.append(o)
    return out


A = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
B = [0, 0, 1, 1, 1, 1, 2, 2, 2, 0]


def test_two_runs_against_a_known_contingency(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objects(11), "m")
    write_labels(lake, "m", "run_a_000001", ids[:10], A, minutes=0)
    write_labels(lake, "m", "run_b_000002", ids[1:10] + [ids[10]], B[1:] + [1], minutes=1)
    c = compare_runs(lake, "m@v1", "m@v2")
    # shared: locations 1..9
    a, b = A[1:], B[1:10]
    expected = {}
    for x, y in zip(a, b):
        expected[(x, str(y))] = expected.get((x, str(y)), 0) + 1
    assert {(cell.a, cell.b): cell.locations for cell in c.contingency} == expected
    assert (c.compared, c.only_a, c.only_b) == (9, 1, 1)
    assert c.ari == pytest.approx(ari_by_hand(a, b))
    assert 0 < c.nmi < 1
    assert c.changed == sum(x != y for x, y in zip(a, b)) == 2
    assert c.unmatched == 2
    assert sorted((m.location_id, m.cluster_a, m.cluster_b) for m in c.movers) == sorted(
        (ids[i + 1], x, y) for i, (x, y) in enumerate(zip(a, b)) if x != y
    )
    purity = {p.category: (p.dominant, p.dominant_locations, p.size) for p in c.purity}
    assert purity == {"0": ("0", 1, 2), "1": ("1", 3, 3), "2": ("2", 3, 4)}
    # the same numbers straight from SQL, as a user would ask
    rows = lake.query("SELECT count(*) FROM cluster_movers('run_a_000001', 'run_b_000002')").column(0)[0].as_py()
    assert rows == 2
    # comparing a run with itself: everything identical
    same = compare_runs(lake, "m@v1", "run_a_000001")
    assert same.ari == pytest.approx(1.0) and same.nmi == pytest.approx(1.0) and same.changed == 0 and same.movers == []


def test_renumbered_partition_is_identical_but_every_number_changed(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objects(10), "m")
    write_labels(lake, "m", "r1", ids, A, minutes=0)
    write_labels(lake, "m", "r2", ids, [(x + 1) % 3 for x in A], minutes=1)
    c = compare_runs(lake, "m@v1", "m@v2")
    assert c.ari == pytest.approx(1.0) and c.changed == 10 and c.unmatched == 0


def test_compare_with_tags_counts_each_tag_and_ignores_svcluster_tags(lake, tmp_path):
    # k3-c1 and k3-c2 are tags an export of m@v1 wrote (the map was re-imported from it)
    tags = [["desert"], ["desert"], ["desert", "coast"], ["coast"], None, ["k3-c1"], ["forest", "k3-c2"], ["forest"], ["forest", "forest"], []]
    ids = ingest_objects(lake, tmp_path, objects(10, tags), "m")
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    write_labels(lake, "m", "run_t", ids, labels)
    export_map(lake, tmp_path / "m.tagged.json", run="m@v1")
    c = compare_with_tags(lake, "m@v1")
    cells = {(cell.a, cell.b): cell.locations for cell in c.contingency}
    assert cells == {(0, "desert"): 3, (0, "coast"): 1, (1, "coast"): 1, (2, "forest"): 3}
    assert c.compared == 8  # location-tag pairs
    assert c.only_a == 3  # untagged, only an svcluster tag, empty list
    assert c.run_b is None and c.changed is None
    purity = {p.category: (p.dominant, round(p.purity, 3)) for p in c.purity}
    assert purity == {"0": ("desert", 0.75), "1": ("coast", 1.0), "2": ("forest", 1.0)}
    spread = {p.category: (p.dominant, p.dominant_locations, p.size) for p in c.spread}
    assert spread == {"coast": ("0", 1, 2), "desert": ("0", 3, 3), "forest": ("2", 3, 3)}
    pair_clusters = [0, 0, 0, 0, 1, 2, 2, 2]
    pair_tags = ["desert", "desert", "coast", "desert", "coast", "forest", "forest", "forest"]
    tag_ids = [sorted(set(pair_tags)).index(t) for t in pair_tags]
    assert c.ari == pytest.approx(ari_by_hand(pair_clusters, tag_ids))


def test_a_tag_svcluster_never_wrote_is_the_users_even_if_it_looks_like_ours(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objects(4, [["k5-c3"], ["k5-c3"], ["2019"], ["2019"]]), "m")
    write_labels(lake, "m", "run_t", ids, [0, 0, 1, 1])
    c = compare_with_tags(lake, "m@v1")
    assert {(cell.a, cell.b): cell.locations for cell in c.contingency} == {(0, "k5-c3"): 2, (1, "2019"): 2}


def test_errors_name_what_is_missing(lake, tmp_path):
    ids = ingest_objects(lake, tmp_path, objects(4), "m")
    write_labels(lake, "m", "r1", ids[:2], [0, 1])
    write_labels(lake, "m", "r2", ids[2:], [0, 1], minutes=1)
    with pytest.raises(SvclusterError, match="no location in common"):
        compare_runs(lake, "m@v1", "m@v2")
    with pytest.raises(SvclusterError, match="carries a tag of its own"):
        compare_with_tags(lake, "m@v1")
    with pytest.raises(NotFoundError, match="no cluster run named 'm@v9'"):
        compare_runs(lake, "m@v1", "m@v9")


def test_movers_show_where_they_are_and_link_to_street_view(lake, tmp_path, capsys):
    from urllib.parse import parse_qs, urlparse

    from svcluster.flows.cli import main

    ids = ingest_objects(lake, tmp_path, objects(10), "m")
    write_labels(lake, "m", "run_a_000001", ids, A, minutes=0)
    write_labels(lake, "m", "run_b_000002", ids, B, minutes=1)
    c = compare_runs(lake, "m@v1", "m@v2")
    moved = {m.location_id: m for m in c.movers}
    i = 2  # A 0 -> B 1
    m = moved[ids[i]]
    assert (m.lat, m.lng, m.pano_id) == (-21.0, -70.0, f"pano{i:04d}xxxxxxxxxxxxxx")
    q = {k: v[0] for k, v in parse_qs(urlparse(m.url).query).items()}
    assert q == {"api": "1", "map_action": "pano", "viewpoint": "-21.000000,-70.000000", "pano": m.pano_id}
    assert main(["--lake", lake.uri, "compare", "m@v1", "m@v2"]) == 0
    out = capsys.readouterr().out
    assert "movers (first 2 of 2; all: the cluster_movers SQL macro)" in out
    assert f"  {ids[i]}  0 -> 1  -21.00000, -70.00000  {m.url}" in out.splitlines()
