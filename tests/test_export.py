"""Export without a cluster run: the map comes back out exactly as it went in, in its own shape."""

from __future__ import annotations

import json

import pytest

from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.export.step import export_map
from svcluster.tasks.ingest.step import ingest_map
from svcluster.tasks.demo.sample import generate_locations, to_format
from tests.fixtures.maps import geoguessr_doc, map_making_doc, vali_doc, write_map


def round_trip(lake, path, tmp_path, name=None) -> object:
    r = ingest_map(lake, path, name)
    out = tmp_path / "out" / f"{r.map}.json"
    e = export_map(lake, out, map_name=r.map)
    assert (e.map, e.run, e.locations, e.tagged, e.untagged) == (r.map, None, r.locations, 0, 0)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left behind
    return json.loads(out.read_text(encoding="utf-8"))


def test_chile_shaped_1000_locations_round_trip_losslessly(lake, chile_map, tmp_path) -> None:
    exported = round_trip(lake, chile_map, tmp_path)
    with open(chile_map, encoding="utf-8") as a:
        original = json.load(a)
    assert isinstance(exported, list) and len(exported) == 1000
    assert exported == original  # same objects, same order, same values, existing tags kept
    assert sum(1 for x in exported if "tags" in x.get("extra", {})) > 200


@pytest.mark.parametrize("fmt", ["geoguessr", "customCoordinates", "vali"])
def test_generated_formats_round_trip(lake, tmp_path, fmt) -> None:
    doc = to_format(generate_locations(300, seed=4), fmt, name="Sample of Chile")
    path = write_map(tmp_path / f"{fmt}.json", doc)
    assert round_trip(lake, path, tmp_path) == doc


def test_custom_coordinates_envelope_is_kept(lake, tmp_path) -> None:
    doc = map_making_doc()
    doc["settings"] = {"zoom": [1, 2], "nothing": None}
    exported = round_trip(lake, write_map(tmp_path / "mma.json", doc), tmp_path)
    assert exported == doc
    assert list(exported) == list(doc)  # top-level keys in the input's order
    assert exported["name"] == "Chile roads"


def test_vali_and_odd_values_round_trip(lake, tmp_path) -> None:
    doc = vali_doc() + [
        {"lat": 0, "lng": -0.0, "big": 123456789012345678901234567890, "tiny": 5e-324, "s": "é\u2028\"\\",
         "nested": {"a": [[], {}, None]}, "extra": {"tags": ["x", ""], "n": None}},
    ]
    assert round_trip(lake, write_map(tmp_path / "v.json", doc), tmp_path) == doc


def test_duplicates_are_exported_as_the_file_has_them(lake, tmp_path) -> None:
    doc = geoguessr_doc(5)
    doc += [doc[2], doc[0], dict(doc[1], lat=doc[1]["lat"] + 0.0003)]  # two copies; another object on doc[1]'s pano
    path = write_map(tmp_path / "dups.json", doc)
    assert round_trip(lake, path, tmp_path) == doc


def test_export_overwrites_an_existing_file(lake, chile_map, tmp_path) -> None:
    ingest_map(lake, chile_map)
    out = tmp_path / "out.json"
    out.write_text("old content")
    export_map(lake, out, map_name="chile")
    assert json.loads(out.read_text()) == json.loads(chile_map.read_text())


def test_export_of_an_unknown_map_or_run_is_an_error(lake, tmp_path) -> None:
    out = tmp_path / "x.json"
    with pytest.raises(NotFoundError, match="no map named 'nope'"):
        export_map(lake, out, map_name="nope")
    with pytest.raises(NotFoundError):
        export_map(lake, out, run="nope@v1")
    with pytest.raises(SvclusterError):
        export_map(lake, out)
    assert not out.exists()


def test_after_reingest_the_export_follows_the_new_file(lake, tmp_path) -> None:
    path = write_map(tmp_path / "m.json", geoguessr_doc(6))
    ingest_map(lake, path)
    changed = list(reversed(geoguessr_doc(6)))[:4]
    write_map(path, changed)
    assert round_trip(lake, path, tmp_path) == changed
