"""A view is a place, a heading and its view settings (size, fov, pitch): a fetch at other
settings than the lake's buys the views it asks for (and only those, once), and embed pools one
consistent set per map — the map's own fetch settings, or those named — never a mix of sizes
or of another map's fetch of a shared place (issue 15, item 8).

Over real HTTP to the local Street View server, counting billed image requests, and with the
``baseline`` model (no weights). The settings used are the Static API's own, as Google's
request reference documents them (developers.google.com/maps/documentation/streetview/
request-streetview): ``size`` WIDTHxHEIGHT with no side over 640, ``fov`` up to 120 (default 90),
``pitch`` -90..90 (default 0); the server bills each image request as the API does. The maps
are the sample generator's customCoordinates objects (tests/fixtures/streetview.py); rows
"written before settings were kept" are what `lake migrate` brings from an older lake."""

from __future__ import annotations

from collections import Counter


import pyarrow as pa

from svcluster.tasks.embed.step import EmbedOptions, embed_map
from svcluster.tasks.fetch.step import FetchOptions, fetch_map
from tests.fixtures.streetview import ingest_locations, sample_locations

BASE = dict(qps=0, concurrency=8, backoff_base=0.001, backoff_max=0.01, max_retries=1)
BIG = FetchOptions(**BASE)  # 640x640, fov 90, pitch 0, headings 0/90/180/270
SMALL = FetchOptions(size="320x320", **BASE)


def billed(server) -> Counter:
    """Billed image requests per size asked for."""
    return Counter(r.params["size"] for r in server.requests if r.endpoint == "image")


def image_sizes(lake, map_name: str) -> Counter:
    return Counter(
        (r["width"], r["height"])
        for r in lake.query(
            "SELECT i.width, i.height FROM images i JOIN places p USING (location_id) WHERE p.map = ? AND i.status = 'ok'",
            [map_name],
        ).to_pylist()
    )


def test_a_fetch_at_another_size_buys_its_views_once_and_keeps_both_sets(lake, tmp_path, streetview_server, streetview_settings):
    name = ingest_locations(lake, tmp_path / "m.json", sample_locations(3), "sizes", streetview_server)

    first = fetch_map(lake, name, streetview_settings, BIG)
    assert first.ok == 12 and billed(streetview_server) == {"640x640": 12}

    streetview_server.reset_counts()
    second = fetch_map(lake, name, streetview_settings, SMALL)
    assert (second.ok, second.skipped, second.image_requests) == (12, 0, 12)  # 4 views per place, billed
    assert billed(streetview_server) == {"320x320": 12}
    assert image_sizes(lake, name) == {(640, 640): 12, (320, 320): 12}  # both sets stay in the lake

    for options in (SMALL, BIG):  # a rerun of either buys nothing
        streetview_server.reset_counts()
        again = fetch_map(lake, name, streetview_settings, options)
        assert (again.image_requests, again.skipped) == (0, 12) and not billed(streetview_server)

    streetview_server.reset_counts()  # another fov is another view too
    wide = fetch_map(lake, name, streetview_settings, FetchOptions(fov=120, headings=(0,), **BASE))
    assert wide.image_requests == 3 and billed(streetview_server) == {"640x640": 3}


def test_embed_uses_the_maps_latest_settings_only_and_recomputes_when_they_change(lake, tmp_path, streetview_server, streetview_settings):
    name = ingest_locations(lake, tmp_path / "m.json", sample_locations(3), "sizes", streetview_server)
    fetch_map(lake, name, streetview_settings, BIG)
    opts = EmbedOptions(model="baseline", batch_size=4)

    first = embed_map(lake, name, opts)
    assert first.locations_embedded == 3
    assert _embeddings(lake) == {("640x640/fov90/pitch0", 4)}

    fetch_map(lake, name, streetview_settings, SMALL)
    second = embed_map(lake, name, opts)
    assert second.locations_embedded == 3 and second.views_embedded == 12  # the 320 views, not re-pooled 640 ones
    assert _embeddings(lake) == {("320x320/fov90/pitch0", 4)}  # 4 views each: the 640 set not averaged in
    pooled = lake.query(
        "SELECT v.image_sha256, i.width FROM embedding_views v JOIN images i "
        "ON i.location_id = v.location_id AND i.heading = v.heading AND i.sha256 = v.image_sha256 "
        "WHERE v.view_settings = '320x320/fov90/pitch0'"
    ).to_pylist()
    assert len(pooled) == 12 and {r["width"] for r in pooled} == {320}

    assert embed_map(lake, name, opts).locations_embedded == 0  # up to date: nothing again
    # Named settings: back to the 640 set, re-pooled from the per-view vectors already there.
    back = embed_map(lake, name, EmbedOptions(model="baseline", batch_size=4, view_settings="640x640/fov90/pitch0"))
    assert (back.locations_embedded, back.views_embedded, back.views_reused) == (3, 0, 12)
    assert _embeddings(lake) == {("640x640/fov90/pitch0", 4)}


def test_two_maps_sharing_a_place_at_different_settings_each_pool_their_own(lake, tmp_path, streetview_server, streetview_settings):
    locs = sample_locations(4, seed=9)
    a = ingest_locations(lake, tmp_path / "a.json", locs[:3], "a", streetview_server)  # places 0, 1, 2
    b = ingest_locations(lake, tmp_path / "b.json", locs[2:], "b", streetview_server)  # places 2, 3: place 2 shared
    fetch_map(lake, a, streetview_settings, BIG)
    streetview_server.reset_counts()
    fetch_map(lake, b, streetview_settings, FetchOptions(size="320x320", headings=(0, 180), **BASE))
    assert billed(streetview_server) == {"320x320": 4}  # b's own settings, also for the shared place

    opts = EmbedOptions(model="baseline", batch_size=4)
    shared = lake.query("SELECT location_id FROM places WHERE map = 'a' AND position = 2").column(0)[0].as_py()
    embed_map(lake, b, opts)  # b: its 320x320 views, 2 headings, for both its places
    assert _embeddings(lake, [shared]) == {("320x320/fov90/pitch0", 2)}
    embed_map(lake, a, opts)  # a: its 640x640 views, 4 headings, for all three (the shared one again)
    assert _embeddings(lake) == {("640x640/fov90/pitch0", 4)} | {("320x320/fov90/pitch0", 2)}
    assert _embeddings(lake, [shared]) == {("640x640/fov90/pitch0", 4)}
    # One vector per place and model: the shared place holds the map embedded last (a's), and
    # embedding b again recomputes it from b's settings.
    assert embed_map(lake, b, opts).locations_embedded == 1
    assert _embeddings(lake, [shared]) == {("320x320/fov90/pitch0", 2)}


def test_two_maps_sharing_a_place_at_one_size_pool_their_own_headings(lake, tmp_path, streetview_server, streetview_settings):
    """Same settings, other headings: each map pools the headings its own fetch asked for
    (map_views), never the extra headings another map bought for a shared place."""
    locs = sample_locations(3, seed=12)
    a = ingest_locations(lake, tmp_path / "a.json", locs[:2], "a", streetview_server)  # places 0, 1
    b = ingest_locations(lake, tmp_path / "b.json", locs[1:], "b", streetview_server)  # places 1, 2: place 1 shared
    fetch_map(lake, a, streetview_settings, BIG)  # 4 headings
    streetview_server.reset_counts()
    fetch_map(lake, b, streetview_settings, FetchOptions(headings=(0, 180), **BASE))
    assert billed(streetview_server) == {"640x640": 2}  # only b's place 2: the shared place's views were bought
    shared = lake.query("SELECT location_id FROM places WHERE map = 'a' AND position = 1").column(0)[0].as_py()
    opts = EmbedOptions(model="baseline", batch_size=4)
    embed_map(lake, b, opts)
    assert _embeddings(lake, [shared]) == {("640x640/fov90/pitch0", 2)}  # not the 4 a bought
    assert lake.query("SELECT map, headings FROM map_views ORDER BY map").to_pylist() == [
        {"map": "a", "headings": [0, 90, 180, 270]}, {"map": "b", "headings": [0, 180]},
    ]  # fmt: skip
    embed_map(lake, a, opts)
    assert _embeddings(lake, [shared]) == {("640x640/fov90/pitch0", 4)}


def test_rows_written_without_settings_read_as_the_defaults(lake, tmp_path, streetview_server, streetview_settings):
    name = ingest_locations(lake, tmp_path / "m.json", sample_locations(2), "old", streetview_server)
    fetch_map(lake, name, streetview_settings, BIG)
    # An older lake (as `lake migrate` brings it): its rows had no width/height/fov/pitch.
    # Rewrite the Delta table as such, under the lake API.
    from deltalake import DeltaTable, write_deltalake

    uri = lake.path("tables/images")
    t = DeltaTable(uri).to_pyarrow_table()
    for col in ("width", "height", "fov", "pitch"):
        i = t.schema.get_field_index(col)
        t = t.set_column(i, col, pa.nulls(t.num_rows, t.schema.field(col).type))
    write_deltalake(uri, t, mode="overwrite")
    assert image_sizes(lake, name) == {(640, 640): 8}
    streetview_server.reset_counts()
    assert fetch_map(lake, name, streetview_settings, BIG).image_requests == 0
    assert embed_map(lake, name, EmbedOptions(model="baseline")).locations_embedded == 2


def _embeddings(lake, ids: list[str] | None = None) -> set[tuple[str, int]]:
    rows = lake.query("SELECT location_id, view_settings, view_count FROM embeddings WHERE model = 'baseline'").to_pylist()
    return {(r["view_settings"], r["view_count"]) for r in rows if ids is None or r["location_id"] in ids}


def test_folder_files_stand_for_any_size_and_embed_with_the_fetched_views(lake, tmp_path, streetview_server, streetview_settings):
    from svcluster.tasks.fetch.folder_import import import_folder
    from tests.test_folder_import import notebook_folder

    name = ingest_locations(lake, tmp_path / "nb.json", sample_locations(3, seed=21), "nb", streetview_server)
    notebook_folder(tmp_path / "nb", 3, skip={(0, 270)})  # 64x48 files, fov 90, pitch 0
    import_folder(lake, name, tmp_path / "nb", BIG)
    streetview_server.reset_counts()
    done = fetch_map(lake, name, streetview_settings, BIG)  # only the missing view: the files count at any size
    assert (done.image_requests, done.skipped) == (1, 11)
    streetview_server.reset_counts()
    assert fetch_map(lake, name, streetview_settings, SMALL).image_requests == 1  # the API's view, at 320 too
    r = embed_map(lake, name, EmbedOptions(model="baseline"))  # the latest fetch's size, the files with it
    assert r.locations_embedded == 3 and _embeddings(lake) == {("320x320/fov90/pitch0", 4)}
    low = fetch_map(lake, name, streetview_settings, FetchOptions(pitch=-10, headings=(0,), **BASE))
    assert low.image_requests == 3  # another pitch is another view
    assert embed_map(lake, name, EmbedOptions(model="baseline")).locations_embedded == 3  # the latest fetch's set
    assert _embeddings(lake) == {("640x640/fov90/pitch-10", 1)}
    named = EmbedOptions(model="baseline", view_settings="640x640/fov90/pitch0")
    assert embed_map(lake, name, named).locations_embedded == 3  # the files with the API's 640 view
    assert _embeddings(lake) == {("640x640/fov90/pitch0", 4)}


def test_cli_embed_names_the_view_settings(lake, tmp_path, streetview_server, streetview_settings, capsys):
    from svcluster.flows.cli import main as cli_main

    name = ingest_locations(lake, tmp_path / "m.json", sample_locations(2), "cli", streetview_server)
    fetch_map(lake, name, streetview_settings, BIG)
    fetch_map(lake, name, streetview_settings, SMALL)
    base = ["--lake", lake.uri, "--json", "embed", "--map", name, "--model", "baseline"]
    assert cli_main([*base, "--size", "640x640"]) == 0
    assert _embeddings(lake) == {("640x640/fov90/pitch0", 4)}
    assert cli_main(base) == 0  # unnamed: the map's latest fetch (320x320)
    assert _embeddings(lake) == {("320x320/fov90/pitch0", 4)}
    capsys.readouterr()
    assert cli_main([*base, "--size", "999x1"]) != 0
    assert "--size must be WIDTHxHEIGHT" in capsys.readouterr().err
    assert cli_main([*base, "--fov", "45"]) != 0  # no views at fov 45: nothing to embed, said so


def test_a_broken_folder_file_is_marked_failed_at_its_own_settings(lake, tmp_path, streetview_server, streetview_settings):
    from svcluster.tasks.fetch.folder_import import import_folder
    from tests.test_folder_import import notebook_folder

    name = ingest_locations(lake, tmp_path / "nb.json", sample_locations(2, seed=21), "nb", streetview_server)
    notebook_folder(tmp_path / "nb", 2)
    import_folder(lake, name, tmp_path / "nb", BIG)
    path = lake.query("SELECT path FROM images i JOIN places p USING (location_id) WHERE p.position = 0 AND i.heading = 90").column(0)[0].as_py()
    lake.write_bytes(path, b"not a jpeg at all" * 10)
    r = embed_map(lake, name, EmbedOptions(model="baseline"))
    assert (r.locations_embedded, r.views_failed) == (2, 1)
    rows = lake.query(
        "SELECT status, width, height FROM images i JOIN places p USING (location_id) WHERE p.position = 0 AND i.heading = 90"
    ).to_pylist()
    assert rows == [{"status": "failed", "width": 64, "height": 48}]  # the folder view itself, not a new 640x640 one
    streetview_server.reset_counts()
    again = fetch_map(lake, name, streetview_settings, BIG)
    assert again.image_requests == 1  # that view is bought from the API
