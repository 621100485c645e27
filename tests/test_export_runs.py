"""Export per run: the map in its own shape, every original field intact, one svcluster tag each."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
from svcluster.tasks.cluster.compare import compare_with_tags
from svcluster.tasks.export.step import export_map
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.demo.sample import generate_locations, to_format
from tests.cluster_data import append_embeddings


def odd_map() -> dict:
    """A map-making.app-style map with fields svcluster knows nothing about."""
    doc = to_format(generate_locations(40, seed=3, tagged_share=0.5), "customCoordinates", name="small")
    doc["description"] = "Chile — ñandú"
    doc["settings"] = {"zoom": 3, "nested": [1, 2.5, None]}
    locs = doc["customCoordinates"]
    locs[0]["links"] = ["a", "b"]
    locs[1]["imageDate"] = "2019-05"
    locs[2]["extra"]["note"] = None
    locs[3]["extra"]["tags"] = ["k7-c2", "k3-cx", "2019"]  # an earlier svcluster tag, and two of the player's own
    locs[4]["lat"] = -33.000000123456789
    locs[5]["weird"] = {"deep": {"deeper": [True, False, None, 1e-7]}}
    locs[6]["extra"]["tags"] = ["k7-c2"]  # only an earlier svcluster tag
    locs[35].setdefault("extra", {})["tags"] = ["k7-c1", "mine"]  # no embedding below: the stale tag goes
    return doc


@pytest.fixture
def run_lake(lake, tmp_path):
    doc = odd_map()
    path = tmp_path / "small.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    ingest_map(lake, path, "small")
    ids = lake.query("SELECT location_id FROM locations WHERE map = 'small' ORDER BY position").column(0).to_pylist()
    rng = np.random.default_rng(0)
    embedded = ids[:30]  # the last 10 have no embedding
    append_embeddings(lake, embedded, rng.standard_normal((30, 8)).astype(np.float32), model="baseline")
    result = cluster_map(lake, "small", ClusterOptions(k=3))
    rows = lake.query("SELECT location_id, cluster FROM cluster_assignments WHERE run_id = ?", [result.run.run_id]).to_pylist()
    labels = {r["location_id"]: r["cluster"] for r in rows}
    # An earlier export at k=7 (small@v2) wrote the k7-c* tags odd_map() carries: svcluster's own.
    cluster_map(lake, "small", ClusterOptions(k=7))
    export_map(lake, tmp_path / "earlier.json", run="small@v2")
    return lake, doc, ids, labels, result


def expected_object(original: dict, new_tag: str | None, stale: str = r"k[0-9]+-c[0-9]+") -> dict:
    import re

    out = copy.deepcopy(original)
    tags = out.get("extra", {}).get("tags") or []
    kept = [t for t in tags if not re.fullmatch(stale, t)] + ([new_tag] if new_tag is not None else [])
    if kept != tags:
        out.setdefault("extra", {})["tags"] = kept
    return out


def test_export_keeps_the_shape_and_every_field_and_tags_once(run_lake, tmp_path):
    lake, doc, ids, labels, result = run_lake
    out = tmp_path / "out.json"
    r = export_map(lake, out, run="small@v1")
    assert (r.locations, r.tagged, r.untagged) == (40, 30, 10)
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert list(exported) == list(doc)  # same top-level fields, same order
    assert {k: v for k, v in exported.items() if k != "customCoordinates"} == {k: v for k, v in doc.items() if k != "customCoordinates"}
    assert len(exported["customCoordinates"]) == 40
    for i, (original, got) in enumerate(zip(doc["customCoordinates"], exported["customCoordinates"])):
        tag = f"k3-c{labels[ids[i]]}" if ids[i] in labels else None
        want = expected_object(original, tag)
        assert got == want, f"location {i}"
        # field order kept, except that a patched ``extra`` moves to the end of its object
        assert [k for k in got if k != "extra"] == [k for k in want if k != "extra"], f"location {i}"
    assert exported["customCoordinates"][3]["extra"]["tags"][:2] == ["k3-cx", "2019"]
    assert exported["customCoordinates"][4]["lat"] == -33.000000123456789
    assert exported["customCoordinates"][2]["extra"]["note"] is None
    assert exported["customCoordinates"][35]["extra"]["tags"] == ["mine"]
    assert exported["customCoordinates"][36] == doc["customCoordinates"][36]  # untagged, untouched
    # the labels exported are the labels the run reported
    counts = np.bincount([labels[i] for i in ids[:30]], minlength=3).tolist()
    assert counts == result.run.sizes


def test_reexported_map_gets_its_tag_replaced_not_piled_up(run_lake, tmp_path):
    lake, doc, ids, labels, result = run_lake
    first = tmp_path / "first.json"
    export_map(lake, first, run="small@v1")
    ingest_map(lake, first, "small")  # the user imports the tagged map back under the same name
    second = tmp_path / "second.json"
    export_map(lake, second, run=result.run.run_id)
    exported = json.loads(second.read_text(encoding="utf-8"))["customCoordinates"]
    for i, loc in enumerate(exported):
        ours = [t for t in loc.get("extra", {}).get("tags", []) if t.startswith("k")]
        assert ours == (["k3-cx"] if i == 3 else []) + ([f"k3-c{labels[ids[i]]}"] if ids[i] in labels else [])
    # the same content as the first export: nothing accumulated
    assert exported == json.loads(first.read_text(encoding="utf-8"))["customCoordinates"]


def test_bare_array_and_custom_template(lake, tmp_path):
    locs = generate_locations(12, seed=9)
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(to_format(locs, "geoguessr")), encoding="utf-8")
    ingest_map(lake, path, "arr")
    ids = lake.query("SELECT location_id FROM locations WHERE map = 'arr' ORDER BY position").column(0).to_pylist()
    append_embeddings(lake, ids, np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32))
    cluster_map(lake, "arr", ClusterOptions(k=2))
    out = tmp_path / "arr-out.json"
    r = export_map(lake, out, run="arr@v1", tag_format="{run}/c{cluster}")
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(exported, list) and len(exported) == 12 and r.untagged == 0
    for original, got in zip(locs, exported):
        tag = got["extra"]["tags"][-1]
        assert tag in ("arr@v1/c0", "arr@v1/c1")
        assert got == expected_object(original, tag, stale=r".+/c[0-9]+")


def test_cli_export_of_a_run(run_lake, tmp_path, capsys):
    lake, doc, ids, labels, result = run_lake
    out = tmp_path / "cli.json"
    assert main(["--lake", lake.uri, "export", "small@v1", "--out", str(out), "--tag-format", "vis{cluster}"]) == 0
    text = capsys.readouterr().out
    assert "30 tagged by small@v1" in text and "10 without an embedding left untagged" in text
    exported = json.loads(out.read_text(encoding="utf-8"))["customCoordinates"]
    assert exported[0]["extra"]["tags"][-1] == f"vis{labels[ids[0]]}"
    assert main(["--lake", lake.uri, "export", "small@v9", "--out", str(out)]) == 1
    assert "no cluster run named 'small@v9'" in capsys.readouterr().err


@pytest.mark.parametrize("template", ["{cluster}", "route-{cluster}", "{run}-{cluster}"])
def test_export_never_removes_a_users_tag_that_fits_the_template(run_lake, tmp_path, template):
    # Tags a user wrote that the template's shape matches: before, a pattern made from the
    # current template deleted them.
    lake, doc, ids, labels, result = run_lake
    users = {"{cluster}": "2019", "route-{cluster}": "route-66", "{run}-{cluster}": "trip-2019"}[template]
    doc["customCoordinates"][10]["extra"]["tags"] = [users, "keep"]
    path = tmp_path / "small.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    ingest_map(lake, path, "small")
    out = tmp_path / "out.json"
    export_map(lake, out, run="small@v1", tag_format=template)
    tags = json.loads(out.read_text())["customCoordinates"][10]["extra"]["tags"]
    ours = template.replace("{cluster}", str(labels[ids[10]])).replace("{run}", "small@v1")
    assert tags == [users, "keep", ours]


def test_tags_of_an_earlier_template_go_and_never_count_as_the_users(run_lake, tmp_path):
    lake, doc, ids, labels, result = run_lake
    first = tmp_path / "first.json"
    export_map(lake, first, run="small@v1")  # k3-c* tags
    ingest_map(lake, first, "small")  # the user re-imports the tagged map
    second = tmp_path / "second.json"
    export_map(lake, second, run="small@v1", tag_format="vis{cluster}")
    for i, loc in enumerate(json.loads(second.read_text())["customCoordinates"]):
        tags = loc.get("extra", {}).get("tags") or []
        assert not any(t in ("k3-c0", "k3-c1", "k3-c2") or t.startswith("k7-") for t in tags), i
        assert [t for t in tags if t.startswith("vis")] == ([f"vis{labels[ids[i]]}"] if ids[i] in labels else [])
    recorded = lake.query("SELECT DISTINCT tag_format FROM exported_tags WHERE map = 'small' ORDER BY 1").column(0).to_pylist()
    assert recorded == ["k{k}-c{cluster}", "vis{cluster}"]
    ingest_map(lake, second, "small")
    c = compare_with_tags(lake, "small@v1")
    assert not {cell.b for cell in c.contingency} & {"k3-c0", "k3-c1", "k3-c2", "vis0", "vis1", "vis2"}


def test_a_run_of_an_earlier_map_version_is_stale_and_its_coverage_is_counted_by_cause(run_lake, tmp_path):
    """After a re-ingest with five locations moved (five new places, embedded since), the old
    run still tags the places it has; the five new ones are not 'without an embedding': they
    have one, the run was made before them (issue 15.12)."""
    from svcluster.tasks.cluster.runs import resolve_run, run_coverage

    lake, doc, ids, labels, result = run_lake
    changed = copy.deepcopy(doc)
    for i, loc in enumerate(changed["customCoordinates"][:5]):
        loc["lat"] += 0.01
        loc["panoId"] = None
        loc.pop("extra", None)
    path = tmp_path / "small-v2.json"
    path.write_text(json.dumps(changed, ensure_ascii=False), encoding="utf-8")
    ingest_map(lake, path, "small")
    new_ids = lake.query("SELECT location_id FROM locations WHERE map = 'small' ORDER BY position").column(0).to_pylist()
    assert set(new_ids[:5]).isdisjoint(ids) and new_ids[5:] == ids[5:]
    append_embeddings(lake, new_ids[:5], np.random.default_rng(5).standard_normal((5, 8)).astype(np.float32), model="baseline")
    old = resolve_run(lake, "small@v1")
    assert old.stale
    cov = run_coverage(lake, old)
    assert (cov.objects, cov.objects_in_run, cov.objects_embedded_not_in_run, cov.objects_without_embedding) == (40, 25, 5, 10)
    assert (cov.places, cov.places_in_run, cov.places_embedded_not_in_run, cov.places_without_embedding) == (40, 25, 5, 10)
    assert cov.run_places_gone == 5
    r = export_map(lake, tmp_path / "old.json", run="small@v1")
    assert r.tagged == cov.objects_in_run and r.untagged == cov.objects_embedded_not_in_run + cov.objects_without_embedding
    # a run of the current version covers every embedded place
    fresh = resolve_run(lake, cluster_map(lake, "small", ClusterOptions(k=3)).run.run_id)
    assert not fresh.stale
    cov = run_coverage(lake, fresh)
    assert (cov.objects_in_run, cov.objects_embedded_not_in_run, cov.objects_without_embedding, cov.run_places_gone) == (30, 0, 10, 0)


def test_export_of_a_run_of_an_earlier_map_version_says_so_and_counts_by_cause(run_lake, tmp_path, capsys):
    lake, doc, ids, labels, result = run_lake
    grown = copy.deepcopy(doc)
    added = [dict(grown["customCoordinates"][0], panoId=f"addedPano{i:02d}xxxxxxxxxx", lat=-20.0 - i) for i in range(5)]
    grown["customCoordinates"] += added
    path = tmp_path / "small.json"
    path.write_text(json.dumps(grown), encoding="utf-8")
    ingest_map(lake, path, "small")
    new_ids = lake.query("SELECT location_id FROM locations WHERE map = 'small' AND position >= 40 ORDER BY position").column(0).to_pylist()
    append_embeddings(lake, new_ids, np.random.default_rng(5).standard_normal((5, 8)).astype(np.float32), model="baseline")
    out = tmp_path / "stale.json"
    assert main(["--lake", lake.uri, "export", "small@v1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "30 tagged by small@v1, 5 not in this run (embedded after it: cluster again to tag them), 10 without an embedding left untagged" in text
    assert "note: small@v1 was made on an earlier version of map 'small'" in text
    assert len(json.loads(out.read_text())["customCoordinates"]) == 45
