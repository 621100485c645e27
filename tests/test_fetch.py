"""The fetch step end to end against the local API server on 127.0.0.1 and a real lake:
statuses, resume, pinning, fatal stop, kill -9 then rerun, signing, redaction, gc, CLI."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from svcluster.flows.cli import main as cli_main
from svcluster.tasks.errors import NotFoundError, SvclusterError
from svcluster.tasks.fetch.step import FatalApiError, FetchItem, FetchOptions, fetch_batch, fetch_map, gc_blobs, plan_fetch, replan_batch
from svcluster.tasks.settings import load_settings
from svcluster.tasks.fetch.server import Fault, Panorama, StreetViewServer, location_pano_id, pano_date
from tests.fixtures.streetview import FAKE_KEY, FAKE_SECRET, ingest_locations, sample_locations

FAST = FetchOptions(qps=0, concurrency=4, backoff_base=0.001, backoff_max=0.01, max_retries=2, timeout=5.0)
REPO = Path(__file__).resolve().parents[1]


def images(lake) -> dict[tuple[str, int], dict]:
    rows = lake.query("SELECT * FROM images").to_pylist()
    return {(r["location_id"], r["heading"]): r for r in rows}


def raw_image_rows(lake) -> list[dict]:
    return lake.query(
        "SELECT location_id, heading, status FROM lake_images"
    ).to_pylist()


def locations(lake, map_name: str) -> list[dict]:
    return lake.query("SELECT location_id, pano_id, lat, lng FROM locations WHERE map = ? ORDER BY position", [map_name]).to_pylist()


def assert_blobs_clean(lake) -> None:
    """Every blob whole (sha256 = its name, decodable) and referenced; every ok row's blob exists."""
    blobs = set(lake.list("blobs"))
    ok_paths = {r["path"] for r in images(lake).values() if r["status"] == "ok"}
    all_paths = {r["path"] for r in lake.query(
        "SELECT path FROM lake_images WHERE path IS NOT NULL"
    ).to_pylist()}  # fmt: skip
    assert ok_paths <= blobs
    assert blobs <= all_paths, f"orphaned blobs: {sorted(blobs - all_paths)[:3]}"
    for p in blobs:
        data = lake.read_bytes(p)
        assert p == f"blobs/{p.split('/')[-1][:2]}/{hashlib.sha256(data).hexdigest()}.jpg"
        assert data.endswith(b"\xff\xd9")


def test_every_status_is_recorded_from_the_api(lake, streetview_server, streetview_settings, fetch_map_name):
    locs = locations(lake, fetch_map_name)
    gone, flaky, broken, half, retried = (locs[i]["pano_id"] for i in range(5))
    # deleted, with nothing at its place any more: ZERO_RESULTS by id and by location
    streetview_server.world.delete(gone)
    streetview_server.world.no_coverage(locs[0]["lat"], locs[0]["lng"])
    streetview_server.add_fault(Fault("500", endpoint="image", pano=flaky, heading=90, times=None))
    streetview_server.add_fault(Fault("not_image", endpoint="image", pano=broken, heading=180))
    streetview_server.add_fault(Fault("truncated", endpoint="image", pano=half, heading=0))
    streetview_server.add_fault(Fault("429", endpoint="image", pano=retried, heading=270, times=2))
    # a location without panoId whose coordinates have no imagery
    no_pano = [loc for loc in locs if loc["pano_id"] is None]
    dark = f"{no_pano[0]['lat']:.7f},{no_pano[0]['lng']:.7f}"
    streetview_server.world.no_coverage(no_pano[0]["lat"], no_pano[0]["lng"])

    r = fetch_map(lake, fetch_map_name, streetview_settings, FAST)

    assert (r.locations, r.views) == (12, 48)
    assert (r.ok, r.no_imagery, r.failed, r.skipped) == (48 - 8 - 3, 8, 3, 0)
    assert r.failure_reasons == {
        "image HTTP 500 after 3 attempts": 1, "image body not a JPEG (57 bytes)": 1,
        r_key(r.failure_reasons, "truncated"): 1,
    }  # fmt: skip
    rows = images(lake)
    assert len(rows) == 48
    by_loc = {loc["location_id"]: loc for loc in locs}
    for (lid, heading), row in rows.items():
        loc = by_loc[lid]
        assert row["fov"] == 90.0 and row["pitch"] == 0.0 and row["source"] == "api"
        if loc["pano_id"] == gone:
            assert row["status"] == "no_imagery" and row["path"] is None and row["pano_id"] is None
            assert row["reason"] == "ZERO_RESULTS by pano id, then ZERO_RESULTS by location" and row["requested_pano_id"] == gone
            continue
        if loc["pano_id"] is None and f"{loc['lat']:.7f},{loc['lng']:.7f}" == dark:
            assert row["status"] == "no_imagery" and row["reason"] == "ZERO_RESULTS" and row["path"] is None
            continue
        expected_pano = loc["pano_id"] or location_pano_id(loc["lat"], loc["lng"])
        assert row["pano_id"] == expected_pano and row["capture_date"] == pano_date(expected_pano)
        if (loc["pano_id"], heading) in {(flaky, 90), (broken, 180), (half, 0)}:
            assert row["status"] == "failed" and row["path"] is None and row["sha256"] is None
        else:
            assert row["status"] == "ok", row
            assert (row["width"], row["height"]) == (640, 640)
            data = lake.read_bytes(row["path"])
            assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["size_bytes"]
    # metadata first, images only by the pinned pano id, none for panoramas without imagery
    image_reqs = [q.params for q in streetview_server.requests if q.endpoint == "image"]
    assert all("pano" in p and "location" not in p and p["return_error_code"] == "true" for p in image_reqs)
    assert not any(p["pano"] == gone for p in image_reqs)
    assert streetview_server.counts["metadata"] == 12 + 1  # the deleted id's one location lookup
    assert streetview_server.counts["image"] == 40 + 2 + 2  # 40 views, 2 retries of the 500, 2 of the 429
    assert r.requests == streetview_server.counts["total"]
    assert_blobs_clean(lake)


def r_key(reasons: dict[str, int], needle: str) -> str:
    return next(k for k in reasons if needle in k)


def test_rerun_fetches_only_missing_or_failed(lake, streetview_server, streetview_settings, fetch_map_name):
    locs = locations(lake, fetch_map_name)
    streetview_server.add_fault(Fault("503", endpoint="image", pano=locs[1]["pano_id"], times=None))
    streetview_server.world.delete(locs[2]["pano_id"])  # deleted, nothing in its place
    streetview_server.world.no_coverage(locs[2]["lat"], locs[2]["lng"])
    first = fetch_map(lake, fetch_map_name, streetview_settings, FAST)
    assert (first.ok, first.failed, first.no_imagery) == (40, 4, 4)
    streetview_server.clear_faults()
    streetview_server.reset_counts()

    assert [(i.location_id, i.headings) for i in plan_fetch(lake, fetch_map_name, FAST)] == [(locs[1]["location_id"], (0, 90, 180, 270))]
    second = fetch_map(lake, fetch_map_name, streetview_settings, FAST)
    assert (second.ok, second.failed, second.no_imagery, second.skipped) == (4, 0, 0, 44)
    assert streetview_server.counts["metadata"] == 1 and streetview_server.counts["image"] == 4
    third = fetch_map(lake, fetch_map_name, streetview_settings, FAST)
    assert (third.ok, third.skipped, third.requests) == (0, 48, 0)
    statuses = [r["status"] for r in images(lake).values()]
    assert statuses.count("ok") == 44 and statuses.count("no_imagery") == 4 and len(statuses) == 48


def test_new_headings_reuse_the_pinned_panorama(lake, tmp_path, streetview_server, streetview_settings):
    name = ingest_locations(lake, tmp_path / "nopano.json", [{"lat": -33.4 - i / 10, "lng": -70.6} for i in range(3)], "nopano")
    fetch_map(lake, name, streetview_settings, FetchOptions(headings=(0, 180), qps=0))
    pinned = {r["location_id"]: r["pano_id"] for r in images(lake).values()}
    streetview_server.reset_counts()
    r = fetch_map(lake, name, streetview_settings, FetchOptions(headings=(0, 90, 180, 270), qps=0))
    assert (r.ok, r.skipped) == (6, 6)
    meta = [q.params for q in streetview_server.requests if q.endpoint == "metadata"]
    assert sorted(m["pano"] for m in meta) == sorted(pinned.values()) and not any("location" in m for m in meta)
    assert all(row["pano_id"] == pinned[lid] for (lid, _), row in images(lake).items())


def test_a_refused_key_stops_the_step_at_the_first_requests_before_any_billed_one(lake, streetview_server, streetview_settings, fetch_map_name, caplog):
    bad = streetview_settings.model_copy(update={"api_key": type(streetview_settings.api_key)("AIzaWRONGkeyXYZ")})
    with pytest.raises(FatalApiError) as err:
        fetch_map(lake, fetch_map_name, bad, FetchOptions(concurrency=8, qps=0))
    # Only the free metadata requests that were in flight (one per connection at most).
    assert streetview_server.counts["image"] == 0 and 1 <= streetview_server.counts["metadata"] <= 8
    assert "REQUEST_DENIED" in str(err.value) and "AIzaWRONGkeyXYZ" not in str(err.value)
    assert lake.table_files("images") == []  # no commit of images rows


def test_a_refusal_on_images_stops_the_step_and_keeps_finished_rows(lake, streetview_server, streetview_settings, tmp_path):
    name = ingest_locations(lake, tmp_path / "big.json", sample_locations(60), "big", streetview_server)
    streetview_server.latency = 0.005
    streetview_server.add_fault(Fault("403", endpoint="image", times=None))
    with pytest.raises(FatalApiError, match="HTTP 403"):
        fetch_map(lake, name, streetview_settings, FetchOptions(concurrency=4, qps=0))
    assert streetview_server.counts["image"] <= 4  # one per connection at most, not 240
    assert streetview_server.counts["metadata"] <= 2 * 4 + 1  # free; the locations in flight (2 x concurrency)


def test_a_retried_batch_asks_only_for_what_its_failed_attempt_did_not_store(lake, streetview_server, streetview_settings, fetch_map_name):
    batch = plan_fetch(lake, fetch_map_name, FAST)[:3]
    # the failed attempt got this far: two views of the first location, all of the second
    fetch_batch(lake.uri, [replace(batch[0], headings=batch[0].headings[:2]), batch[1]], streetview_settings, FAST)
    stored = images(lake)
    left = replan_batch(lake, batch)
    assert [i.location_id for i in left] == [batch[0].location_id, batch[2].location_id]
    assert left[0].headings == batch[0].headings[2:]
    assert left[0].pano_id == stored[(batch[0].location_id, batch[0].headings[0])]["pano_id"]  # the pinned panorama
    assert left[1] == batch[2]
    before = streetview_server.counts["image"]
    fetch_batch(lake.uri, left, streetview_settings, FAST)
    assert streetview_server.counts["image"] - before == 2 + 4
    assert replan_batch(lake, batch) == []


def test_signed_fetch_with_the_secret(lake, fetch_map_name, tmp_path, streetview_server):
    with StreetViewServer(api_key=FAKE_KEY, signing_secret=FAKE_SECRET, world=streetview_server.world) as server:
        settings = load_settings(api_key=FAKE_KEY, signing_secret=FAKE_SECRET, streetview_url=server.base_url)
        r = fetch_map(lake, fetch_map_name, settings, FAST)
        assert (r.ok, r.failed) == (48, 0)
        assert all("signature" in q.params for q in server.requests)
        unsigned = load_settings(api_key=FAKE_KEY, streetview_url=server.base_url)
        ingest_locations(lake, tmp_path / "other.json", sample_locations(3, seed=99), "other", server)
        with pytest.raises(FatalApiError, match="signature"):
            fetch_map(lake, "other", unsigned, FAST)


def test_key_and_secret_never_reach_the_lake_logs_or_errors(lake, fetch_map_name, caplog, capfd, streetview_server):
    caplog.set_level(logging.DEBUG)
    with StreetViewServer(api_key=FAKE_KEY, signing_secret=FAKE_SECRET, world=streetview_server.world) as server:
        locs = locations(lake, fetch_map_name)
        server.add_fault(Fault("500", endpoint="image", pano=locs[0]["pano_id"], times=None))
        server.add_fault(Fault("reset", endpoint="image", pano=locs[1]["pano_id"], times=None))
        server.add_fault(Fault("stall", endpoint="image", pano=locs[2]["pano_id"], heading=0, times=None, seconds=0.5))
        settings = load_settings(api_key=FAKE_KEY, signing_secret=FAKE_SECRET, streetview_url=server.base_url)
        r = fetch_map(lake, fetch_map_name, settings, FetchOptions(qps=0, backoff_base=0.001, max_retries=1, timeout=0.2))
        signatures = {q.params["signature"] for q in server.requests}
        wrong = settings.model_copy(update={"signing_secret": type(settings.signing_secret)("b3RoZXItc2VjcmV0LXh4eA==")})
        with pytest.raises(FatalApiError) as err:
            fetch_batch(lake.uri, plan_fetch(lake, fetch_map_name, FAST), wrong, FAST)
    assert r.failed == 9 and set(r.failure_reasons) == {
        "image HTTP 500 after 2 attempts", "image connection dropped after 2 attempts", "image timeout after 2 attempts",
    }  # fmt: skip
    secrets = [FAKE_KEY, FAKE_SECRET, *signatures]
    texts = [caplog.text, str(err.value), repr(err.value), json.dumps(r.__dict__), *capfd.readouterr()]
    rows = lake.query("SELECT * FROM lake_images").to_pylist()
    texts.append(json.dumps(rows, default=str))
    for path in Path(lake.uri).rglob("*"):
        texts.append(str(path))
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    assert "image request retried" in caplog.text  # debug lines of the failing requests were captured ...
    for text in texts:
        for s in secrets:
            assert s not in text  # ... and none of them, nor anything stored, holds a secret


def test_kill_9_mid_fetch_then_rerun_leaves_one_row_per_view(lake, tmp_path, streetview_server):
    name = ingest_locations(lake, tmp_path / "kill.json", sample_locations(60, seed=8), "kill", streetview_server)
    streetview_server.latency = 0.02
    env = {**os.environ, "GOOGLE_MAPS_API_KEY": FAKE_KEY, "SVCLUSTER_STREETVIEW_URL": streetview_server.base_url}
    cmd = [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--lake", lake.uri, "fetch", "--map", name,
           "--concurrency", "4", "--qps", "0", "--chunk-rows", "8", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(lake.table_files("images")) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the fetch finished before it could be killed"
    before = {k: r for k, r in images(lake).items() if r["status"] == "ok"}
    assert 0 < len(before) < 240
    served_before = streetview_server.counts["image"]
    streetview_server.reset_counts()

    rerun = subprocess.run(cmd, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    assert result["ok"] == 240 - len(before) and result["skipped"] == len(before) and result["failed"] == 0
    assert streetview_server.counts["image"] == 240 - len(before)  # nothing fetched twice after the rerun
    assert served_before - len(before) <= 4 * 4 + 12  # lost at most the in-flight work and one chunk
    raw = raw_image_rows(lake)
    assert len(raw) == 240 and len({(r["location_id"], r["heading"]) for r in raw}) == 240
    assert all(r["status"] == "ok" for r in images(lake).values())
    assert_blobs_clean(lake)
    # A killed write leaves at most a temp file under the lake's _tmp/, never at a path readers see.
    assert not [p for p in Path(lake.uri).rglob("*.tmp") if "_tmp" not in p.relative_to(lake.uri).parts]


def test_gc_removes_only_old_unreferenced_image_blobs(lake, streetview_settings, fetch_map_name):
    fetch_map(lake, fetch_map_name, streetview_settings, FAST)
    kept = set(lake.list("blobs"))
    orphan, _ = lake.put_blob(b"\xff\xd8\xff orphan \xff\xd9", "jpg")
    other, _ = lake.put_blob(b"not an image blob", "bin")
    assert gc_blobs(lake).kept_recent == 1 and lake.exists(orphan)  # young: maybe another fetch's
    result = gc_blobs(lake, min_age_seconds=0)
    assert (result.removed, result.blobs) == (1, 49)
    assert not lake.exists(orphan) and lake.exists(other)
    assert set(lake.list("blobs")) == kept | {other}


def test_fetch_batch_writes_to_an_s3_lake(s3_lake, streetview_server):
    """The batch function Dask workers run, given only a lake URI (DuckDB over moto is slow,
    so the rows are read straight from the Parquet part file)."""
    import pyarrow.parquet as pq

    settings = load_settings(api_key=FAKE_KEY, streetview_url=streetview_server.base_url, lake=s3_lake.uri)
    items = [FetchItem(f"loc{i}", i, -30.0 - i, -70.0, f"PANO{i}", (0, 90)) for i in range(3)]
    streetview_server.world.add(*(Panorama(i.pano_id, i.lat, i.lng) for i in items))
    stats = fetch_batch(s3_lake.uri, items, settings, FAST)
    assert (stats.ok, stats.failed, stats.requests) == (6, 0, 9)
    (part,) = [p for p in s3_lake.table_files("images") if "/part-" in p]
    rows = pq.read_table(io.BytesIO(s3_lake.read_bytes(part))).to_pylist()
    assert sorted((r["location_id"], r["heading"]) for r in rows) == [(f"loc{i}", h) for i in range(3) for h in (0, 90)]
    for r in rows:
        assert hashlib.sha256(s3_lake.read_bytes(r["path"])).hexdigest() == r["sha256"]
    assert sorted(s3_lake.list("blobs")) == sorted(r["path"] for r in rows)


def test_fetch_batch_items_and_options_are_checked(lake, streetview_settings):
    assert fetch_batch(lake.uri, [], streetview_settings, FAST).requests == 0
    item = FetchItem("loc1", 0, -33.4, -70.6, None, (0,))
    stats = fetch_batch(lake.uri, [item], streetview_settings, FAST)
    assert (stats.ok, stats.requests) == (1, 2)
    for bad, field in [({"headings": (0, 400)}, "--headings"), ({"size": "800x600"}, "--size"), ({"fov": 5}, "--fov"),
                       ({"pitch": 99}, "--pitch"), ({"concurrency": 0}, "--concurrency"), ({"qps": -1}, "--qps")]:  # fmt: skip
        with pytest.raises(SvclusterError, match=field):
            FetchOptions(**bad).checked()
    with pytest.raises(NotFoundError, match="nosuchmap"):
        plan_fetch(lake, "nosuchmap", FAST)
    no_key = streetview_settings.model_copy(update={"api_key": None})
    with pytest.raises(SvclusterError, match="GOOGLE_MAPS_API_KEY"):
        fetch_batch(lake.uri, [item], no_key, FAST)


def test_cli_summary_and_json(lake, streetview_server, fetch_map_name, monkeypatch, capsys):
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SVCLUSTER_STREETVIEW_URL", streetview_server.base_url)
    first = locations(lake, fetch_map_name)[0]
    streetview_server.world.delete(first["pano_id"])  # deleted, nothing in its place
    streetview_server.world.no_coverage(first["lat"], first["lng"])
    args = ["--lake", lake.uri, "fetch", "--map", fetch_map_name, "--headings", "0,90", "--size", "320x320", "--qps", "0"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "24 views of 12 locations — 22 ok, 2 no imagery, 0 failed, 0 already in the lake" in out
    assert "requests (13 metadata, 22 image)" in out and "img/s" in out  # 12 places + the deleted id's location lookup
    assert {(r["width"], r["height"]) for r in images(lake).values() if r["status"] == "ok"} == {(320, 320)}
    assert cli_main([*args, "--headings", "0,90,180", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ok"], doc["no_imagery"], doc["skipped"], doc["views"], doc["image_requests"]) == (11, 1, 24, 36, 11)
    assert cli_main([*args, "--size", "9000x1"]) == 1
    assert "--size" in capsys.readouterr().err
    monkeypatch.setenv("GOOGLE_MAPS_API_KEY", "AIzaBADBADBAD")
    assert cli_main([*args, "--headings", "45"]) == 1
    err = capsys.readouterr().err
    assert "REQUEST_DENIED" in err and "AIzaBADBADBAD" not in err


def test_cli_draws_a_progress_bar_with_rate_and_eta_on_a_terminal(lake, streetview_server, fetch_map_name, tmp_path):
    import pty
    import re

    streetview_server.latency = 0.02  # long enough for the bar to redraw while it runs
    env = {**os.environ, "GOOGLE_MAPS_API_KEY": FAKE_KEY, "SVCLUSTER_STREETVIEW_URL": streetview_server.base_url,
           "PYTHONPATH": str(REPO), "COLUMNS": "200", "TERM": "xterm"}  # fmt: skip
    cmd = [sys.executable, "-c", "from svcluster.flows.cli import main; main()", "--lake", lake.uri, "fetch", "--map", fetch_map_name,
           "--concurrency", "2", "--qps", "0"]  # fmt: skip
    terminal, stderr_end = pty.openpty()  # stderr is a terminal: the bar is drawn; stdout is a pipe
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr_end)
    os.close(stderr_end)
    drawn = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the command closed its end
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(terminal)
    assert proc.returncode == 0, drawn[-2000:]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode("utf-8", "replace"))
    assert "fetching Street View images" in screen and "48/48" in screen
    assert re.search(r"[\d.,]+ img/s", screen) and "eta" in screen
    assert "48 views of 12 locations" in out.decode()  # the summary still goes to stdout
