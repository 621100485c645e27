"""Parsing and validating every map format (no lake involved)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcluster.tasks.ingest import locations
from svcluster.tasks.errors import MapFormatError
from svcluster.tasks.ingest.locations import location_id, parse_map_bytes, read_map_file, validate_map_name
from tests.fixtures.maps import geoguessr_doc, map_making_doc, vali_doc, write_map


def parse(doc: object, name: str = "m"):
    return parse_map_bytes(json.dumps(doc).encode(), "in/map.json", name)


def rows(doc: object) -> list[dict]:
    return parse(doc).rows.to_pylist()


def test_geoguessr_array() -> None:
    doc = geoguessr_doc(6)
    parsed = parse(doc)
    assert (parsed.format, parsed.dialect, parsed.envelope) == ("array", "geoguessr", None)
    got = parsed.rows.to_pylist()
    assert [r["position"] for r in got] == list(range(6))
    for r, item in zip(got, doc):
        assert (r["lat"], r["lng"], r["pano_id"], r["heading"], r["pitch"], r["zoom"]) == (
            item["lat"], item["lng"], item["panoId"], item["heading"], item["pitch"], item["zoom"]
        )
        assert r["tags"] == item.get("extra", {}).get("tags")
        assert json.loads(r["raw"]) == item
        assert r["map"] == "m"
    assert got[0]["tags"] == ["desert", "Paved"]


def test_map_making_app_fields() -> None:
    doc = map_making_doc()
    parsed = parse(doc)
    assert (parsed.format, parsed.dialect) == ("customCoordinates", "map-making.app")
    assert parsed.envelope == {"name": "Chile roads", "description": "exported from map-making.app",
                               "customCoordinates": None, "extra": {"author": "someone", "version": 3}}
    first, second, third = parsed.rows.to_pylist()
    # panoId null: the real id is under extra.panoId
    assert first["pano_id"] == "CAoSLEFGMVFpcE1"
    assert (first["country_code"], first["region_code"], first["tags"]) == ("CL", "RM", ["city", "bollard"])
    assert (first["heading"], first["pitch"], first["zoom"]) == (87.5, -3.25, 0.7)
    assert json.loads(first["extra"]) == doc["customCoordinates"][0]["extra"]
    assert second["pano_id"] == "realPanoIdAtTopLevel"
    assert (third["pano_id"], third["country_code"], third["region_code"], third["tags"]) == (None, None, None, [])
    for r, item in zip((first, second, third), doc["customCoordinates"]):
        assert json.loads(r["raw"]) == item  # imageDate, links, panoDate, unknown fields: all there


def test_map_generator_without_links_is_named_so() -> None:
    doc = map_making_doc()
    for item in doc["customCoordinates"]:
        item.pop("links", None)
        item.pop("imageDate", None)
    assert parse(doc).dialect == "map-generator"


def test_vali_output() -> None:
    doc = vali_doc()
    parsed = parse(doc)
    assert (parsed.format, parsed.dialect) == ("array", "vali")
    first, second = parsed.rows.to_pylist()
    assert (first["region_code"], first["country_code"], first["tags"]) == ("CL-LL", "CL", ["forest"])
    assert (second["heading"], second["pitch"], second["zoom"], second["tags"]) == (None, None, None, None)
    assert json.loads(second["raw"]) == doc[1]  # nulls stay omitted, locationId kept
    assert "pitch" not in json.loads(second["raw"])


def test_unknown_fields_survive_at_every_level() -> None:
    doc = [{"lat": 1, "lng": 2, "weird": {"deep": [1, {"x": None}]}, "extra": {"mine": "yes", "tags": ["a"]},
            "big": 2**70, "unicode": "Ñuñoa ✓", "float": 1e-7}]
    (r,) = rows(doc)
    assert json.loads(r["raw"]) == doc[0]
    assert json.loads(r["raw"])["big"] == 2**70  # a 22-digit integer is kept exactly, not rounded


def test_location_id_is_stable() -> None:
    doc = geoguessr_doc(4)
    ids = {r["raw"]: r["location_id"] for r in rows(doc)}
    moved = {r["raw"]: r["location_id"] for r in rows(list(reversed(doc)))}
    assert ids == moved  # position in the file does not matter
    loc = doc[0]
    assert location_id(loc["panoId"], loc["lat"], loc["lng"]) == location_id(loc["panoId"], 0.0, 0.0)
    assert location_id(None, -33.4489, -70.6693) == location_id(None, -33.44890001, -70.66930004)
    assert location_id(None, -33.4489, -70.6693) != location_id(None, -33.4490, -70.6693)
    assert location_id("a", 1.0, 2.0) != location_id("b", 1.0, 2.0)
    assert location_id(None, 1.0, 2.0) != location_id("x", 1.0, 2.0)
    # an int coordinate is the same place as the float one
    (a,), (b,) = rows([{"lat": 5, "lng": 6}]), rows([{"lat": 5.0, "lng": 6.0}])
    assert a["location_id"] == b["location_id"]


def test_pano_id_from_extra_gives_the_same_id_as_top_level() -> None:
    top = rows([{"lat": 1, "lng": 2, "panoId": "P1"}])[0]
    nested = rows({"customCoordinates": [{"lat": 3, "lng": 4, "panoId": None, "extra": {"panoId": "P1"}}]})[0]
    assert top["location_id"] == nested["location_id"]


def test_duplicates_and_shared_places_reported_and_every_object_kept() -> None:
    doc = geoguessr_doc(5)
    doc += [dict(doc[1]), dict(doc[3], heading=5)]  # an exact copy; the same pano with another heading
    doc.append({"lat": 10.0, "lng": 20.0})
    doc.append({"lat": 10.0000001, "lng": 20.0})  # same place within 1e-6 degrees, no pano
    parsed = parse(doc)
    assert parsed.duplicates == [(5, 1)]
    assert parsed.shared == [(6, 3), (8, 7)]
    assert parsed.places == 6
    got = parsed.rows.to_pylist()
    assert [r["position"] for r in got] == list(range(9))
    assert [json.loads(r["raw"]) for r in got] == doc
    assert got[5]["location_id"] == got[1]["location_id"] and got[6]["location_id"] == got[3]["location_id"]


def test_duplicates_across_chunks(monkeypatch) -> None:
    monkeypatch.setattr(locations, "CHUNK_ITEMS", 3)
    doc = geoguessr_doc(7)
    doc += [doc[0], doc[6], dict(doc[2], extra={"tags": ["other"]})]
    parsed = parse(doc)
    assert parsed.duplicates == [(7, 0), (8, 6)]
    assert parsed.shared == [(9, 2)]
    assert parsed.rows.num_rows == 10 and parsed.places == 7


BAD = [
    # (file bytes, item, field, words in the message)
    (b"{not json", None, None, "not valid JSON"),
    (b"\xff\xfe[]", None, None, "not"),
    (b'"a string"', None, None, "expected a JSON array"),
    (b"42", None, None, "expected a JSON array"),
    (b'{"name": "x", "locations": []}', None, None, "without customCoordinates"),
    (b'{"name": "x", "customCoordinates": {"lat": 1}}', None, "customCoordinates", "list"),
    (b"[]", None, None, "no locations"),
    (b'{"name": "x", "customCoordinates": []}', None, None, "no locations"),
    (b'[{"lat": 1, "lng": 2}, 5]', 1, None, "JSON object"),
    (b'[{"lat": 1, "lng": 2}, {"lat": 91, "lng": 2}]', 1, "lat", "between -90 and 90"),
    (b'[{"lat": -90.0001, "lng": 2}]', 0, "lat", "between -90 and 90"),
    (b'[{"lat": 1, "lng": 2}, {"lat": 1, "lng": 3}, {"lat": 1, "lng": -180.5}]', 2, "lng", "between -180 and 180"),
    (b'[{"lat": 1, "lng": 181}]', 0, "lng", "between"),
    (b'[{"lng": 2}]', 0, "lat", "missing"),
    (b'[{"lat": null, "lng": 2}]', 0, "lat", "null"),
    (b'[{"lat": "1.5", "lng": 2}]', 0, "lat", "must be a number"),
    (b'[{"lat": 1, "lng": 2, "heading": "north"}]', 0, "heading", "must be a number"),
    (b'[{"lat": 1, "lng": 2, "heading": true}]', 0, "heading", "must be a number"),
    (b'[{"lat": 1, "lng": 2, "heading": 1e999}]', 0, "heading", "Infinity"),
    (b'[{"lat": 1, "lng": 2, "pitch": 120}]', 0, "pitch", "between -90 and 90"),
    (b'[{"lat": 1, "lng": 2, "zoom": [1]}]', 0, "zoom", "must be a number"),
    (b'[{"lat": 1, "lng": 2, "extra": {"tags": "city"}}]', 0, "extra.tags", "list of strings"),
    (b'[{"lat": 1, "lng": 2, "extra": {"tags": ["ok", 3]}}]', 0, "extra.tags", "strings only"),
    (b'[{"lat": 1, "lng": 2, "extra": {"tags": [null]}}]', 0, "extra.tags", "strings only"),
    (b'[{"lat": 1, "lng": 2, "extra": "x"}]', 0, "extra", "object"),
    (b'[{"lat": 1, "lng": 2, "panoId": 12}]', 0, "panoId", "string"),
    (b'{"customCoordinates": [{"lat": 1, "lng": 2, "panoId": null, "extra": {"panoId": 7}}]}', 0, "extra.panoId", "string"),
    (b'[{"lat": 1, "lng": 2, "countryCode": 56}]', 0, "countryCode", "string"),
    (b'[{"lat": 1, "lng": 2, "subdivisionCode": ["CL"]}]', 0, "subdivisionCode", "string"),
    (b'[{"lat": 1, "lng": 2, "other": NaN}]', 0, "other", "NaN"),
]


@pytest.mark.parametrize("data,item,field,words", BAD, ids=[str(b[0][:40]) for b in BAD])
def test_bad_input_names_file_item_and_field(data: bytes, item, field, words) -> None:
    with pytest.raises(MapFormatError) as err:
        parse_map_bytes(data, "maps/bad.json", "bad")
    exc = err.value
    assert (exc.file, exc.item, exc.field) == ("maps/bad.json", item, field)
    message = str(exc)
    assert message.startswith("maps/bad.json")
    assert words in message
    if item is not None:
        assert f"item {item}" in message
    if field is not None:
        assert f"field '{field}'" in message
    assert "\n" not in message


def test_bad_item_deep_in_a_large_file_is_named() -> None:
    doc = geoguessr_doc(2500)
    doc[2345]["lat"] = 123
    with pytest.raises(MapFormatError, match=r"item 2345: field 'lat'"):
        parse(doc)


def test_read_map_file_names_the_file(tmp_path) -> None:
    with pytest.raises(MapFormatError, match="cannot read"):
        read_map_file(tmp_path / "missing.json")
    path = write_map(tmp_path / "Some Map.json", geoguessr_doc(2))
    assert read_map_file(path).name == "Some Map"
    assert read_map_file(path, "other").name == "other"


@pytest.mark.parametrize(
    "name",
    ["", "   ", "../escape", "../../etc/passwd", "/abs/path", "a/b", "C:\\x", "..", ".", "a\x00b", "tab\there",
     "new\nline", "x\u202ey", "a@v1", "x" * 201, "名" * 201, " padded", "\ud800"],
)
def test_bad_map_names_are_refused(name: str) -> None:
    with pytest.raises(MapFormatError) as err:
        validate_map_name(name)
    assert err.value.file == "--map"


@pytest.mark.parametrize("name", ["chile1000locs", "A Diverse World", "Ñuñoa – días", "名" * 200, "v1.2 (final)", "..x"])
def test_good_map_names_are_kept(name: str) -> None:
    assert validate_map_name(name) == name


# ---- the column-at-a-time path accepts exactly what the item-by-item path accepts -----------

NUMBER = st.one_of(st.none(), st.integers(-400, 400), st.floats(-400, 400))
TEXT = st.sampled_from([None, "", "CL", "p"])
GOOD = {
    "lat": st.one_of(st.floats(-90, 90), st.integers(-90, 90)),
    "lng": st.one_of(st.floats(-180, 180), st.integers(-180, 180)),
    "heading": NUMBER, "zoom": NUMBER, "pitch": st.one_of(st.none(), st.floats(-90, 90), st.integers(-90, 90)),
    "panoId": TEXT, "countryCode": TEXT, "stateCode": TEXT, "subdivisionCode": TEXT,
    "extra": st.one_of(st.none(), st.fixed_dictionaries(
        {}, optional={"panoId": TEXT, "tags": st.one_of(st.none(), st.lists(st.sampled_from(["a", "b"]), max_size=2))})),
}
BAD_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-400, 400), st.floats(allow_nan=False), st.sampled_from(["", "x"]),
    st.lists(st.sampled_from(["a", 1, None]), max_size=2),
    st.fixed_dictionaries({}, optional={"panoId": st.sampled_from([None, "", "p", 3]),
                                        "tags": st.sampled_from([None, [], ["t"], "t", [2]])}),
)
ITEM = st.fixed_dictionaries({"lat": GOOD["lat"], "lng": GOOD["lng"]},
                             optional={k: v for k, v in GOOD.items() if k not in ("lat", "lng")})


@st.composite
def item_lists(draw) -> list[dict]:
    """A few valid items; often one of them gets one arbitrary value in one field."""
    items = draw(st.lists(ITEM, min_size=1, max_size=4))
    if draw(st.booleans()):
        item = draw(st.sampled_from(items))
        item[draw(st.sampled_from(sorted(GOOD)))] = draw(BAD_VALUE)
    return items


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(item_lists())
def test_fast_path_agrees_with_item_by_item_checks(items) -> None:
    fast = locations._fast_batch(items, 0)
    try:
        checked = locations._checked_batch(items, 0, "f", True)
    except MapFormatError:
        assert fast is None, "the fast path accepted what the item checks refuse"
        return
    if fast is not None:
        assert fast.to_pylist() == checked.to_pylist()
