"""The fetch against the Street View API as Google documents it, over real HTTP to the local
server (``svcluster.tasks.fetch.server``) and into a real lake: stale pano ids refreshed for free,
deleted panoramas, third-party photospheres and ``--official-only``, ``--source outdoor``,
dates as Google gives them, the panorama's own location, and never the same panorama and
heading bought twice.

Where the shapes come from:

- Google's metadata document, https://developers.google.com/maps/documentation/streetview/metadata:
  metadata requests are free, images are billed; ``date`` is ``YYYY-MM`` (also just ``YYYY``,
  or left out); ``copyright`` names the owner (``© Google``, or a person for a user's upload);
  ``location`` is the panorama's own position; "Refresh deleted panorama IDs": ZERO_RESULTS
  for a pano id means it was deleted — look the location up again. Pano ids change over time.
- ``source=outdoor`` (the Street View Static API's parameters): outdoor collections only;
  photospheres are not returned, as it is unknown whether they are indoors.
- A third-party photosphere's id: the long ``CAoS…`` shape public Google Maps URLs carry for
  user uploads (tests/fixtures/real_maps.py, ``THIRD_PARTY``).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from svcluster.flows.cli import main as cli_main
from svcluster.flows.params import FetchParams
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import FetchOptions, fetch_map
from svcluster.tasks.fetch.server import Panorama, photosphere
from tests.fixtures.real_maps import PANO_A, PANO_B, PANO_C, THIRD_PARTY
from tests.fixtures.streetview import FAKE_KEY, ingest_locations

TWO = FetchOptions(headings=(0, 180), qps=0, concurrency=8, backoff_base=0.001, backoff_max=0.01, max_retries=1)
HERE = (-33.4372, -70.6506)  # Santiago: a point of the map and, ~20 m away, its panorama's
NEAR = (-33.43738, -70.6506)  # ~20 m south of HERE: within Google's search radius of it


def images(lake, name: str) -> list[dict]:
    """The map's images rows with the position of each place's first object."""
    return lake.query(
        "SELECT p.position, i.* FROM images i JOIN places p USING (location_id) WHERE p.map = ? ORDER BY p.position, i.heading",
        [name],
    ).to_pylist()


def bought(server) -> Counter:
    """Billed image requests per (pano id, heading) the server received."""
    return Counter((r.params["pano"], float(r.params["heading"])) for r in server.requests if r.endpoint == "image")


def metadata_params(server) -> list[dict[str, str]]:
    return [r.params for r in server.requests if r.endpoint == "metadata"]


def obj(lat: float, lng: float, pano: str | None = None) -> dict:
    out = {"lat": lat, "lng": lng, "heading": 0, "pitch": 0, "zoom": 0}
    if pano is not None:
        out["panoId"] = pano
    return out


@pytest.fixture
def cli(monkeypatch, capsys, lake, streetview_server):
    """``svcluster --lake LAKE --json fetch ...`` in this process; returns the JSON result."""
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SVCLUSTER_STREETVIEW_URL", streetview_server.base_url)

    def run(*args: str) -> dict:
        capsys.readouterr()
        code = cli_main(["--lake", lake.uri, "--json", "fetch", "--headings", "0,180", "--qps", "0", *args])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)

    return run


def test_a_stale_id_is_refreshed_by_one_free_location_lookup_and_no_extra_billed_request(lake, tmp_path, streetview_server, streetview_settings):
    # Google: ZERO_RESULTS for a pano id means it was deleted; look the location up again.
    world = streetview_server.world
    world.add(Panorama(PANO_A, *HERE, "2014-02"), Panorama(PANO_B, -33.0458, -71.6197))
    new = world.retire(PANO_A, PANO_C, date="2023-09")  # Google replaced PANO_A by PANO_C, same place
    ingest_locations(lake, tmp_path / "old.json", [obj(*HERE, PANO_A), obj(-33.0458, -71.6197, PANO_B)], "old")

    r = fetch_map(lake, "old", streetview_settings, TWO)

    assert (r.ok, r.no_imagery, r.refreshed) == (4, 0, 1)
    meta = metadata_params(streetview_server)
    assert len(meta) == 3  # one per place, plus exactly one location lookup for the stale id
    assert [m.get("pano") or m["location"] for m in meta if m.get("pano") != PANO_B] == [PANO_A, "-33.4372000,-70.6506000"]
    assert bought(streetview_server) == {(PANO_C, 0.0): 1, (PANO_C, 180.0): 1, (PANO_B, 0.0): 1, (PANO_B, 180.0): 1}
    first = [row for row in images(lake, "old") if row["position"] == 0]
    assert {(row["pano_id"], row["requested_pano_id"], row["capture_date"], row["status"]) for row in first} == {
        (new.pano_id, PANO_A, "2023-09", "ok")
    }
    streetview_server.reset_counts()
    again = fetch_map(lake, "old", streetview_settings, TWO)  # the refreshed id is what resumes
    assert again.requests == 0 and streetview_server.counts["total"] == 0


def test_a_deleted_panorama_without_coverage_is_no_imagery_without_an_image_request(lake, tmp_path, streetview_server, streetview_settings):
    # Google: ZERO_RESULTS by pano id, and the location lookup finds nothing either.
    world = streetview_server.world
    world.add(Panorama(PANO_A, *HERE), Panorama(PANO_B, -33.0458, -71.6197))
    world.delete(PANO_A)
    world.no_coverage(*HERE)
    ingest_locations(lake, tmp_path / "gone.json", [obj(*HERE, PANO_A), obj(-33.0458, -71.6197, PANO_B)], "gone")

    r = fetch_map(lake, "gone", streetview_settings, TWO)

    assert (r.ok, r.no_imagery, r.failed, r.refreshed) == (2, 2, 0, 0)
    assert set(bought(streetview_server)) == {(PANO_B, 0.0), (PANO_B, 180.0)}  # nothing asked for the deleted one
    assert streetview_server.counts["metadata"] == 3
    gone = [row for row in images(lake, "gone") if row["position"] == 0]
    assert {(row["status"], row["pano_id"], row["requested_pano_id"], row["path"]) for row in gone} == {("no_imagery", None, PANO_A, None)}
    assert gone[0]["reason"] == "ZERO_RESULTS by pano id, then ZERO_RESULTS by location"
    streetview_server.reset_counts()
    assert fetch_map(lake, "gone", streetview_settings, TWO).requests == 0  # no_imagery is final


def test_copyright_official_dates_and_the_panoramas_own_location_are_recorded(lake, tmp_path, streetview_server, streetview_settings):
    # Google's metadata: copyright names the owner; date YYYY-MM, YYYY or absent; location is the pano's.
    world = streetview_server.world
    world.add(
        Panorama(PANO_A, *NEAR, "2019-05"),  # Google's, ~20 m from the map's point
        Panorama(PANO_B, -33.0458, -71.6197, "2019"),  # year only
        Panorama(PANO_C, -23.6509, -70.3975, None),  # no date at all
        photosphere(THIRD_PARTY, -41.4689, -72.9411, "Ana Pérez", "2021-11"),
    )
    objects = [obj(*HERE, PANO_A), obj(-33.0458, -71.6197, PANO_B), obj(-23.6509, -70.3975, PANO_C), obj(-41.4689, -72.9411, THIRD_PARTY)]
    ingest_locations(lake, tmp_path / "shapes.json", objects, "shapes")

    r = fetch_map(lake, "shapes", streetview_settings, TWO)

    assert (r.ok, r.failed) == (8, 0)
    rows = {(row["position"], row["heading"]): row for row in images(lake, "shapes")}
    assert {p: rows[(p, 0)]["capture_date"] for p in range(4)} == {0: "2019-05", 1: "2019", 2: None, 3: "2021-11"}
    assert {p: (rows[(p, 0)]["copyright"], rows[(p, 0)]["official"]) for p in range(4)} == {
        0: ("© Google", True), 1: ("© Google", True), 2: ("© Google", True), 3: ("© Ana Pérez", False),
    }  # fmt: skip
    first = rows[(0, 180)]
    assert (first["pano_lat"], first["pano_lng"]) == NEAR  # where the panorama stands, not the map's point
    distance = lake.query(
        "SELECT round(haversine_m, 0) AS m FROM (SELECT 6371008.8 * 2 * asin(sqrt(pow(sin(radians(pano_lat - ?) / 2), 2))) AS haversine_m "
        "FROM images WHERE pano_id = ? LIMIT 1)",
        [HERE[0], PANO_A],
    ).column("m")[0].as_py()
    assert 15 <= distance <= 25  # SQL can show how far the panorama lies from the map's point


def test_official_only_buys_nothing_of_a_photosphere_and_a_later_plain_fetch_buys_it(lake, tmp_path, streetview_server, cli):
    world = streetview_server.world
    world.add(Panorama(PANO_A, *HERE), photosphere(THIRD_PARTY, -41.4689, -72.9411, "Ana Pérez"))
    ingest_locations(lake, tmp_path / "mixed.json", [obj(*HERE, PANO_A), obj(-41.4689, -72.9411, THIRD_PARTY)], "mixed")

    first = cli("--map", "mixed", "--official-only")

    assert (first["ok"], first["third_party_skipped"]) == (2, 2)
    assert set(bought(streetview_server)) == {(PANO_A, 0.0), (PANO_A, 180.0)}  # nothing of the photosphere
    skipped = [row for row in images(lake, "mixed") if row["position"] == 1]
    assert {(row["status"], row["pano_id"], row["copyright"], row["official"], row["path"]) for row in skipped} == {
        ("skipped", THIRD_PARTY, "© Ana Pérez", False, None)
    }
    assert all("--official-only" in row["reason"] and "third-party" in row["reason"] for row in skipped)

    streetview_server.reset_counts()
    assert cli("--map", "mixed", "--official-only")["requests"] == 0  # skipped is done for --official-only
    assert streetview_server.counts["total"] == 0

    later = cli("--map", "mixed")
    assert (later["ok"], later["third_party_skipped"], later["image_requests"], later["metadata_requests"]) == (2, 0, 2, 1)
    assert set(bought(streetview_server)) == {(THIRD_PARTY, 0.0), (THIRD_PARTY, 180.0)}
    assert {row["status"] for row in images(lake, "mixed")} == {"ok"}


def test_source_outdoor_reaches_the_server_and_finds_no_photosphere(lake, tmp_path, streetview_server, cli):
    # A photosphere stands right at the point; with source=outdoor Google does not return it.
    streetview_server.world.add(photosphere(THIRD_PARTY, *HERE, "Ana Pérez"))
    ingest_locations(lake, tmp_path / "bare.json", [obj(*HERE)], "bare")

    r = cli("--map", "bare", "--source", "outdoor")

    (meta,) = metadata_params(streetview_server)
    assert meta["source"] == "outdoor" and meta["location"] == "-33.4372000,-70.6506000"
    assert r["ok"] == 2 and THIRD_PARTY not in {pano for pano, _ in bought(streetview_server)}
    assert {(row["official"], row["copyright"]) for row in images(lake, "bare")} == {(True, "© Google")}


def test_a_plain_location_lookup_finds_the_photosphere_and_records_it_as_third_party(lake, tmp_path, streetview_server, streetview_settings):
    # The counterpart of the test above: without source=outdoor the photosphere is what Google finds.
    streetview_server.world.add(photosphere(THIRD_PARTY, *HERE, "Ana Pérez"))
    ingest_locations(lake, tmp_path / "bare.json", [obj(*HERE)], "bare")
    fetch_map(lake, "bare", streetview_settings, TWO)
    assert "source" not in metadata_params(streetview_server)[0]
    assert {(row["pano_id"], row["official"]) for row in images(lake, "bare")} == {(THIRD_PARTY, False)}


def test_fetch_options_check_the_source_and_pass_to_the_flow():
    assert FetchOptions(source=" Outdoor ").checked().source == "outdoor"
    with pytest.raises(SvclusterError, match="--source must be one of default, outdoor"):
        FetchOptions(source="indoor").checked()
    options = FetchParams(official_only=True, source="outdoor").to_options()
    assert (options.official_only, options.source) == (True, "outdoor")


def test_no_panorama_and_heading_is_bought_twice_across_objects_places_and_reruns(lake, tmp_path, streetview_server, streetview_settings):
    world = streetview_server.world
    world.add(Panorama(PANO_A, *HERE), Panorama(PANO_B, -33.0458, -71.6197))
    world.add(Panorama("STALE_id_near_A_000000", -33.43725, -70.65065))
    world.delete("STALE_id_near_A_000000")  # deleted: its location now finds PANO_A (~6 m away)
    streetview_server.latency = 0.02  # every place of the map is in flight at once
    objects = [
        obj(*HERE, PANO_A), obj(*HERE, PANO_A),  # two objects, one place
        obj(*NEAR),  # no pano id: its location resolves to PANO_A, another place's panorama
        obj(-33.43725, -70.65065, "STALE_id_near_A_000000"),  # a stale id refreshed to PANO_A
        obj(-33.0458, -71.6197, PANO_B),
    ]
    ingest_locations(lake, tmp_path / "one.json", objects, "one")

    r = fetch_map(lake, "one", streetview_settings, TWO)

    assert (r.locations, r.ok, r.failed, r.reused, r.refreshed) == (4, 8, 0, 4, 1)
    assert bought(streetview_server) == {(PANO_A, 0.0): 1, (PANO_A, 180.0): 1, (PANO_B, 0.0): 1, (PANO_B, 180.0): 1}
    rows = images(lake, "one")
    on_a = [row for row in rows if row["pano_id"] == PANO_A]
    assert len(on_a) == 6 and len({(row["heading"], row["path"]) for row in on_a}) == 2  # three places, one blob per heading

    # Rerun, and a new map on the same panorama: rows for the new place, no image request.
    streetview_server.reset_counts()
    assert fetch_map(lake, "one", streetview_settings, TWO).requests == 0
    ingest_locations(lake, tmp_path / "two.json", [obj(-33.43730, -70.65058)], "two")  # a new place, ~10 m from PANO_A
    second = fetch_map(lake, "two", streetview_settings, TWO)
    assert (second.ok, second.reused, second.image_requests, second.metadata_requests) == (2, 2, 0, 1)
    assert not bought(streetview_server)
    assert {row["path"] for row in images(lake, "two")} == {row["path"] for row in on_a}

    # Other view settings are another view: bought once more, once (two new places on PANO_A).
    ingest_locations(lake, tmp_path / "small.json", [obj(-33.43715, -70.6506), obj(-33.43725, -70.6507)], "small")
    small = fetch_map(lake, "small", streetview_settings, FetchOptions(headings=(0,), size="320x320", qps=0))
    assert (small.ok, small.image_requests, small.reused) == (2, 1, 1)
    assert bought(streetview_server) == {(PANO_A, 0.0): 1}


def test_run_takes_official_only_and_source_and_refuses_a_bad_source(tmp_path, capsys):
    map_file = tmp_path / "m.json"
    map_file.write_text(json.dumps([obj(*HERE)]))
    assert cli_main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--official-only" in text and "--source" in text
    assert cli_main(["--lake", str(tmp_path / "lake"), "run", str(map_file), "--source", "indoor"]) == 1
    assert "--source must be one of default, outdoor" in capsys.readouterr().err
