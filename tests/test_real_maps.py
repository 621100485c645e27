"""Real map shapes end to end: every object survives ingest and export, work is shared by place,
pano ids in every form, region maps refused, stale ids refreshed into the export on request.
The shapes, and where each comes from, are in tests/fixtures/real_maps.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from svcluster.flows.cli import main
from svcluster.tasks.cluster.step import ClusterOptions, cluster_map
from svcluster.tasks.errors import MapFormatError
from svcluster.tasks.export.step import export_map
from svcluster.tasks.fetch.step import FetchOptions, fetch_map
from svcluster.tasks.ingest.step import ingest_map
from tests.cluster_data import append_embeddings
from tests.fixtures.real_maps import (
    PANO_A,
    PANO_B,
    bus_stop_map,
    geoguessr_map_object,
    hex_pano,
    map_generator_export,
    map_making_app_export,
    region_map,
)

SHAPES = {
    "geoguessr": geoguessr_map_object,
    "map-generator": map_generator_export,
    "map-making.app": map_making_app_export,
    "bus-stops": bus_stop_map,
}


def write(folder: Path, name: str, doc: object) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def places(lake, name: str) -> list[dict]:
    return lake.query("SELECT location_id, position, pano_id, objects FROM places WHERE map = ? ORDER BY position", [name]).to_pylist()


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_object_comes_back_unchanged_and_in_order(lake, tmp_path, shape) -> None:
    doc = SHAPES[shape]()
    ingest_map(lake, write(tmp_path, shape, doc), shape)
    out = tmp_path / "out.json"
    result = export_map(lake, out, map_name=shape)
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported == doc
    if isinstance(doc, dict):
        assert list(exported) == list(doc)  # keys after the array stay after it
    assert result.locations == len(doc if isinstance(doc, list) else doc["customCoordinates"])


def test_bus_stops_on_one_panorama_are_one_place_and_all_get_its_tag(lake, tmp_path) -> None:
    doc = bus_stop_map()
    ingest_map(lake, write(tmp_path, "stops", doc), "stops")
    got = places(lake, "stops")
    assert [(p["position"], p["objects"]) for p in got] == [(0, 2), (2, 2), (4, 2)]
    vectors = np.array([[1, 0, 0, 0], [0.99, 0.1, 0, 0], [0, 0, 1, 0]], dtype=np.float32)  # places 0, 1 alike
    append_embeddings(lake, [p["location_id"] for p in got], vectors, model="baseline")
    run = cluster_map(lake, "stops", ClusterOptions(k=2)).run
    out = tmp_path / "tagged.json"
    result = export_map(lake, out, run=run.run_id)
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert (result.locations, result.tagged, result.untagged) == (6, 6, 0)
    tags = [obj["extra"]["tags"][-1] for obj in exported]
    assert tags[0] == tags[1] == tags[2] == tags[3] != tags[4] == tags[5]
    for original, back in zip(doc, exported):  # unchanged but for the one tag a run adds
        back["extra"]["tags"] = back["extra"]["tags"][:-1]
        if "tags" not in original["extra"]:
            assert back["extra"].pop("tags") == []
        assert back == original


def test_ingest_reports_exact_duplicates_and_shared_places(capsys, tmp_path) -> None:
    path = write(tmp_path, "stops", bus_stop_map())
    assert main(["--lake", str(tmp_path / "lake"), "--json", "ingest", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["locations"], result["places"]) == (6, 3)
    assert (result["duplicates"], result["duplicate_examples"]) == (1, [[3, 2]])
    assert (result["shared_place"], result["shared_place_examples"]) == (2, [[1, 0], [5, 4]])
    assert main(["--lake", str(tmp_path / "lake"), "ingest", str(path), "--map", "again"]) == 0
    text = capsys.readouterr().out
    assert "6 locations on 3 places ingested" in text
    assert "1 exact duplicate locations, all kept (item 3 = item 2)" in text
    assert "2 locations share a panorama or coordinates with an earlier one, all kept" in text


def test_hex_pano_ids_are_decoded_for_requests_and_kept_in_the_file(lake, tmp_path) -> None:
    doc = geoguessr_map_object()
    ingest_map(lake, write(tmp_path, "gg", doc), "gg")
    rows = lake.query("SELECT pano_id, pano_id_decoded, pano_id_field, heading, country_code FROM locations ORDER BY position").to_pylist()
    assert [(r["pano_id"], r["pano_id_decoded"]) for r in rows] == [
        (hex_pano(PANO_A), PANO_A), (hex_pano(PANO_B, upper=False), PANO_B), (None, None)
    ]
    assert [r["heading"] for r in rows] == [-12.5, 359.9, 180.0]
    assert [r["country_code"] for r in rows] == ["cl", "cl", "CL"]  # as written
    assert [p["pano_id"] for p in places(lake, "gg")] == [PANO_A, PANO_B, None]
    # The same panorama written plainly elsewhere is the same place.
    ingest_map(lake, write(tmp_path, "plain", [{"lat": 1.0, "lng": 2.0, "panoId": PANO_A}]), "plain")
    assert places(lake, "plain")[0]["location_id"] == places(lake, "gg")[0]["location_id"]


def test_pano_id_under_extra_when_the_top_level_is_null_or_missing(lake, tmp_path) -> None:
    ingest_map(lake, write(tmp_path, "mma", map_making_app_export()), "mma")
    rows = lake.query("SELECT pano_id, pano_id_decoded, pano_id_field FROM locations ORDER BY position").to_pylist()
    assert rows == [
        {"pano_id": PANO_A, "pano_id_decoded": PANO_A, "pano_id_field": "extra.panoId"},
        {"pano_id": hex_pano(PANO_B), "pano_id_decoded": PANO_B, "pano_id_field": "extra.panoId"},
    ]


def test_a_region_map_is_refused_as_a_region_map(lake, tmp_path) -> None:
    path = write(tmp_path, "regions", region_map())
    with pytest.raises(MapFormatError, match="is a region map .*not a location map"):
        ingest_map(lake, path, "regions")
    assert lake.query("SELECT count(*) AS n FROM maps").column("n")[0].as_py() == 0


def test_fetch_buys_each_place_once_by_its_decoded_id(lake, tmp_path, streetview_server, streetview_settings) -> None:
    doc = bus_stop_map()
    doc[2]["panoId"] = doc[3]["panoId"] = hex_pano(PANO_B)  # the copy and its original, hex-encoded
    ingest_map(lake, write(tmp_path, "stops", doc), "stops")
    streetview_server.register_panoramas_of(doc)  # the panoramas this map stands on exist
    result = fetch_map(lake, "stops", streetview_settings, FetchOptions(headings=(0, 180)))
    assert (result.locations, result.ok) == (3, 6)
    images = [r for r in streetview_server.requests if r.endpoint == "image"]
    assert len(images) == 6
    assert {r.params["pano"] for r in images} >= {PANO_A, PANO_B}
    assert all(not r.params["pano"].startswith(PANO_B.encode().hex()[:8].upper()) for r in images)
    streetview_server.reset_counts()
    again = fetch_map(lake, "stops", streetview_settings, FetchOptions(headings=(0, 180)))
    assert again.requests == 0 and streetview_server.counts["total"] == 0


def test_export_refresh_panos_writes_the_refreshed_ids_where_the_file_had_them(lake, tmp_path, streetview_server, streetview_settings) -> None:
    # Google: a pano id whose metadata says ZERO_RESULTS was deleted; look the location up again
    # (https://developers.google.com/maps/documentation/streetview/metadata, "Refresh deleted panorama IDs").
    doc = map_making_app_export()  # extra.panoId plain, and extra.panoId hex
    doc["customCoordinates"].append({"lat": -38.7359, "lng": -72.5904, "heading": 0, "panoId": hex_pano(PANO_A, upper=False)})
    doc["customCoordinates"][2]["lat"] = -38.7359  # a third object, top-level hex id of the same stale pano
    ingest_map(lake, write(tmp_path, "old", doc), "old")
    streetview_server.register_panoramas_of(doc["customCoordinates"][1:2])  # PANO_B still exists; PANO_A was deleted
    fetch_map(lake, "old", streetview_settings, FetchOptions(headings=(0,)))
    served = lake.query("SELECT location_id, pano_id FROM images ORDER BY location_id").to_pylist()
    assert PANO_A not in {r["pano_id"] for r in served}
    fresh = {r["pano_id"] for r in served} - {PANO_B}
    assert len(fresh) == 1  # both objects of the deleted panorama were refreshed to one new id
    new_id = fresh.pop()

    kept = tmp_path / "kept.json"
    export_map(lake, kept, map_name="old")
    assert json.loads(kept.read_text()) == doc  # by default the file's own ids

    out = tmp_path / "refreshed.json"
    assert main(["--lake", lake.uri, "--json", "export", "--map", "old", "--out", str(out), "--refresh-panos"]) == 0
    back = json.loads(out.read_text())["customCoordinates"]
    assert back[0]["extra"]["panoId"] == new_id and back[0]["panoId"] is None
    assert back[1] == doc["customCoordinates"][1]  # not stale: unchanged
    assert back[2]["panoId"] == new_id.encode().hex()  # lower-case hex stays lower-case hex
    assert {k: v for k, v in back[2].items() if k != "panoId"} == {k: v for k, v in doc["customCoordinates"][2].items() if k != "panoId"}
