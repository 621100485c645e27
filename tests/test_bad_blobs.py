"""One bad image does not block a map: embed leaves out (and marks failed) views whose blob is
missing or unreadable and goes on; ``svcluster fetch`` buys exactly those views again, and
``--verify`` finds a blob whose bytes changed though it still decodes. A real lake, the local
Street View server and the tiny CLIP."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from PIL import Image

from svcluster.flows.cli import main as cli_main
from tests.fixtures.streetview import FAKE_KEY


def images(lake) -> dict[tuple[str, int], dict]:
    return {(r["location_id"], r["heading"]): r for r in lake.query("SELECT * FROM images").to_pylist()}


def ok_views(lake) -> list[tuple[str, int]]:
    return sorted(k for k, r in images(lake).items() if r["status"] == "ok")


def fetch(lake, map_name: str, *extra: str) -> int:
    return cli_main(["--lake", lake.uri, "fetch", "--map", map_name, "--headings", "0,90", "--size", "64x64", "--qps", "0", *extra])


def embed(lake, map_name: str, tiny_clip: Path, *extra: str) -> int:
    return cli_main(["--lake", lake.uri, "embed", "--map", map_name, "--model", str(tiny_clip), "--device", "cpu",
                     "--precision", "fp32", *extra])  # fmt: skip


def test_a_missing_and_a_corrupt_blob_fail_two_views_and_fetch_repairs_exactly_those(
    lake, streetview_server, fetch_map_name, tiny_clip, monkeypatch, capsys
):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SVCLUSTER_STREETVIEW_URL", streetview_server.base_url)
    assert fetch(lake, fetch_map_name) == 0
    views = ok_views(lake)
    assert len(views) == 24
    rows = images(lake)
    gone, broken = views[0], views[5]
    Path(lake.path(rows[gone]["path"])).unlink()
    Path(lake.path(rows[broken]["path"])).write_bytes(b"<html>not an image</html>")
    capsys.readouterr()

    assert embed(lake, fetch_map_name, tiny_clip) == 0
    out = capsys.readouterr().out
    assert "2 views failed" in out and f"svcluster fetch --map {fetch_map_name}" in out
    assert "object at 0x" not in out and "<_io" not in out
    rows = images(lake)
    assert rows[gone]["status"] == "failed" and rows[gone]["reason"].startswith("blob missing")
    assert rows[broken]["status"] == "failed" and rows[broken]["reason"].startswith("blob unreadable: not a JPEG")
    assert not re.search(r"<\w[^>]* at 0x", rows[broken]["reason"])
    embedded = {r["location_id"]: r["view_count"] for r in lake.query("SELECT * FROM embeddings").to_pylist()}
    assert len(embedded) == 12  # every place has an embedding: the bad views were left out, not fatal
    assert embedded[gone[0]] == 1 and embedded[broken[0]] == 1

    # A plain fetch buys exactly the two failed views again (and nothing else).
    streetview_server.counts.clear()
    assert fetch(lake, fetch_map_name) == 0
    assert streetview_server.counts["image"] == 2
    assert ok_views(lake) == views
    rows = images(lake)
    Image.open(io.BytesIO(lake.read_bytes(rows[broken]["path"]))).load()
    assert lake.exists(rows[gone]["path"])
    capsys.readouterr()
    assert embed(lake, fetch_map_name, tiny_clip, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["views_failed"] == 0 and doc["locations_embedded"] == 2
    assert {r["view_count"] for r in lake.query("SELECT * FROM embeddings").to_pylist()} == {2}


def test_fetch_without_verify_refetches_a_missing_blob_from_one_listing(lake, streetview_server, fetch_map_name, monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SVCLUSTER_STREETVIEW_URL", streetview_server.base_url)
    assert fetch(lake, fetch_map_name) == 0
    gone = ok_views(lake)[3]
    Path(lake.path(images(lake)[gone]["path"])).unlink()
    streetview_server.counts.clear()
    capsys.readouterr()
    assert fetch(lake, fetch_map_name) == 0
    assert "1 views had no blob in the lake: marked failed and fetched again" in capsys.readouterr().out
    assert streetview_server.counts["image"] == 1
    assert lake.exists(images(lake)[gone]["path"])


def test_verify_catches_a_blob_whose_bytes_changed_but_still_decode(lake, streetview_server, fetch_map_name, monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SVCLUSTER_STREETVIEW_URL", streetview_server.base_url)
    assert fetch(lake, fetch_map_name) == 0
    changed = ok_views(lake)[7]
    path = images(lake)[changed]["path"]
    other = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(other, format="JPEG")
    Path(lake.path(path)).write_bytes(other.getvalue())  # a readable JPEG, not the one bought
    streetview_server.counts.clear()
    assert fetch(lake, fetch_map_name) == 0  # existence only: nothing to do
    assert streetview_server.counts["image"] == 0
    capsys.readouterr()
    assert fetch(lake, fetch_map_name, "--verify") == 0
    out = capsys.readouterr().out
    assert "1 views had a blob whose bytes no longer match their sha256 (removed): marked failed and fetched again" in out
    assert streetview_server.counts["image"] == 1
    row = images(lake)[changed]
    assert row["status"] == "ok" and row["path"] == path
    import hashlib

    assert hashlib.sha256(lake.read_bytes(path)).hexdigest() == row["sha256"]
    capsys.readouterr()
    assert fetch(lake, fetch_map_name, "--verify") == 0
    assert "--verify: every ok blob of the map is present and matches its sha256" in capsys.readouterr().out
    assert streetview_server.counts["image"] == 1
