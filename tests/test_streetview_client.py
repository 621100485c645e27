"""The Street View client against the local API server on 127.0.0.1: every answer class,
retries with backoff, fatal refusals, signing, connection reuse and secret redaction."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.client import (
    FatalApiError,
    InvalidImage,
    NoImagery,
    RateLimiter,
    RequestFailed,
    Stopped,
    StreetViewClient,
    inspect_jpeg,
    is_official,
    redact,
    url_signature,
)
from svcluster.tasks.fetch.server import Fault, Panorama, StreetViewServer, World, location_pano_id, pano_date, photosphere, synthetic_jpeg
from tests.fixtures.streetview import FAKE_KEY, FAKE_SECRET

# The panoramas these tests ask for by id (transport tests: retries, signing, pooling); "gone"
# and every other id are unknown to the server and answer ZERO_RESULTS.
KNOWN = ["PANO_abc", "PANO_x", "P", *(f"P{i}" for i in range(40))]


def known_panoramas() -> list[Panorama]:
    return [Panorama(p, 1.0 + i * 0.01, 1.0, pano_date(p)) for i, p in enumerate(KNOWN)]  # far from the points asked about


def known_world() -> World:
    return World(known_panoramas())


@pytest.fixture
def streetview_server(streetview_server):
    """The shared fixture's server, with the panoramas of ``KNOWN``."""
    streetview_server.world.add(*known_panoramas())
    return streetview_server


class Blocking:
    """Drives the asyncio client from plain test code: each call runs to completion on the
    client's own event loop (closed, with the client's connections, when the test ends)."""

    opened: list["Blocking"] = []

    def __init__(self, client: StreetViewClient):
        self.client, self.loop = client, asyncio.new_event_loop()
        Blocking.opened.append(self)

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **kw: self.loop.run_until_complete(attr(*a, **kw))
        return attr

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while Blocking.opened:
        Blocking.opened.pop().close()


def client_for(server: StreetViewServer, key: str = FAKE_KEY, **kw) -> Blocking:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.01)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout", 5.0)
    return Blocking(StreetViewClient(server.base_url, key, **kw))


def test_metadata_by_pano_and_by_location(streetview_server):
    client = client_for(streetview_server)
    p = client.metadata(pano="PANO_abc")
    assert (p.pano_id, p.capture_date) == ("PANO_abc", pano_date("PANO_abc"))
    q = client.metadata(location=(-33.45, -70.66))
    assert q.pano_id == location_pano_id(-33.45, -70.66) and q.lat == pytest.approx(-33.45)
    sent = [r.params for r in streetview_server.requests]
    assert sent[0]["pano"] == "PANO_abc" and "location" not in sent[0]
    assert sent[1]["location"] == "-33.4500000,-70.6600000" and "pano" not in sent[1]
    assert all(r.endpoint == "metadata" and r.params["key"] == FAKE_KEY for r in streetview_server.requests)


def test_image_sends_every_view_parameter_and_return_error_code(streetview_server):
    client = client_for(streetview_server)
    img = client.image("PANO_x", 270, "320x200", 75.0, -10.0)
    assert img.data == synthetic_jpeg("PANO_x", 270.0, (320, 200), 75.0, -10.0)
    assert (img.width, img.height) == (320, 200)
    (req,) = streetview_server.requests
    assert req.params == {
        "pano": "PANO_x", "heading": "270", "size": "320x200", "fov": "75", "pitch": "-10",
        "return_error_code": "true", "key": FAKE_KEY,
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["zero_results", "not_found"])
def test_no_imagery_answers(streetview_server, kind):
    streetview_server.add_fault(Fault(kind, times=None))
    client = client_for(streetview_server)
    with pytest.raises(NoImagery) as meta:
        client.metadata(pano="gone")
    assert meta.value.reason == kind.upper()
    with pytest.raises(NoImagery) as img:
        client.image("gone", 0, "64x64", 90, 0)
    assert img.value.reason == "image HTTP 404"
    assert streetview_server.counts["total"] == 2  # never retried


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [("429", "image"), ("500", "image"), ("503", "metadata"), ("over_query_limit", "metadata"),
     ("over_query_limit", "image"), ("unknown_error", "metadata"), ("bad_json", "metadata"), ("reset", "image")],
)  # fmt: skip
def test_transient_errors_are_retried_until_success(streetview_server, kind, endpoint):
    streetview_server.add_fault(Fault(kind, endpoint=endpoint, times=2))
    client = client_for(streetview_server)
    if endpoint == "metadata":
        assert client.metadata(pano="P").pano_id == "P"
    else:
        assert client.image("P", 90, "64x64", 90, 0).width == 64
    assert streetview_server.counts[endpoint] == 3
    assert client.requests_made == 3


def test_retries_give_up_with_a_reason(streetview_server):
    streetview_server.add_fault(Fault("500", endpoint="image", times=None))
    streetview_server.add_fault(Fault("over_query_limit", endpoint="metadata", times=None))
    client = client_for(streetview_server, max_retries=2)
    with pytest.raises(RequestFailed) as img:
        client.image("P", 0, "64x64", 90, 0)
    assert img.value.reason == "image HTTP 500 after 3 attempts"
    with pytest.raises(RequestFailed) as meta:
        client.metadata(pano="P")
    assert meta.value.reason == "OVER_QUERY_LIMIT after 3 attempts"
    assert streetview_server.counts["total"] == 6


def test_a_stalled_answer_times_out_and_is_retried(streetview_server):
    streetview_server.add_fault(Fault("stall", endpoint="image", times=1, seconds=1.0))
    client = client_for(streetview_server, timeout=0.2)
    t0 = time.perf_counter()
    assert client.image("P", 0, "64x64", 90, 0).width == 64
    assert time.perf_counter() - t0 < 1.0
    assert streetview_server.counts["image"] == 2


def test_backoff_is_exponential_with_full_jitter_and_honours_retry_after():
    client = StreetViewClient("http://127.0.0.1:9", "k", backoff_base=0.1, backoff_max=1.0)
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (6, 1.0)]:
        delays = [client._backoff(attempt, None) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # jittered over the range
    assert client._backoff(0, 0.7) >= 0.7
    assert client._backoff(0, 99.0) == 1.0  # capped


@pytest.mark.parametrize(
    ("fault", "endpoint"),
    [("request_denied", "metadata"), ("invalid_request", "metadata"), ("403", "metadata"),
     ("request_denied", "image"), ("invalid_request", "image"), ("403", "image")],
)  # fmt: skip
def test_refusals_are_fatal_at_once(streetview_server, fault, endpoint):
    streetview_server.add_fault(Fault(fault, endpoint=endpoint, times=None))
    client = client_for(streetview_server)
    with pytest.raises(FatalApiError) as err:
        if endpoint == "metadata":
            client.metadata(pano="P")
        else:
            client.image("P", 0, "64x64", 90, 0)
    assert streetview_server.counts["total"] == 1
    assert isinstance(err.value, SvclusterError) and "refused" in str(err.value)


def test_a_wrong_key_is_fatal_and_never_named(streetview_server):
    client = client_for(streetview_server, key="AIzaWRONGkey999")
    with pytest.raises(FatalApiError) as err:
        client.metadata(pano="P")
    assert "REQUEST_DENIED" in str(err.value) and "AIzaWRONGkey999" not in str(err.value)
    with pytest.raises(Stopped):  # after a refusal the client makes no further request
        client.image("P", 0, "64x64", 90, 0)
    with pytest.raises(FatalApiError) as err:
        client_for(streetview_server, key="AIzaWRONGkey999").image("P", 0, "64x64", 90, 0)
    assert "HTTP 403" in str(err.value) and "AIzaWRONGkey999" not in str(err.value)
    assert streetview_server.counts["total"] == 2


def test_out_of_range_parameters_are_refused_by_the_server(streetview_server):
    for args in [("P", 0, "641x640", 90, 0), ("P", 0, "64x64", 130, 0), ("P", 0, "64x64", 90, 95), ("P", 400, "64x64", 90, 0)]:
        with pytest.raises(FatalApiError, match="HTTP 400"):
            client_for(streetview_server).image(*args)


@pytest.mark.parametrize("kind", ["not_image", "truncated"])
def test_bodies_that_are_not_whole_jpegs_fail_without_retry(streetview_server, kind):
    streetview_server.add_fault(Fault(kind, endpoint="image"))
    client = client_for(streetview_server)
    with pytest.raises(InvalidImage) as err:
        client.image("P", 0, "640x640", 90, 0)
    assert ("not a JPEG" in err.value.reason) if kind == "not_image" else ("truncated" in err.value.reason)
    assert streetview_server.counts["image"] == 1


def test_inspect_jpeg_is_cheap_but_catches_broken_files():
    good = synthetic_jpeg("P", 0, (100, 60), 90, 0)
    assert inspect_jpeg(good) == (100, 60)
    png = io.BytesIO()
    Image.new("RGB", (50, 50)).save(png, "PNG")
    bad_header = b"\xff\xd8\xff\xe0" + b"\x00" * 300 + b"\xff\xd9"
    scan = good.index(b"\xff\xda")
    scan_end = scan + 2 + int.from_bytes(good[scan + 2 : scan + 4], "big")
    # Every header, the scan's included, but no picture: Pillow would "decode" it into a flat grey
    # image (libjpeg only warns), which must never be stored as a view.
    headers_only = good[:scan_end] + b"\xff\xd9"
    no_scan = good[:scan] + b"\x00" * 200 + b"\xff\xd9"
    for data in [b"", good[:-2], good[: len(good) // 3], png.getvalue(), bad_header, b"<html>" * 50, headers_only, no_scan]:
        with pytest.raises(InvalidImage):
            inspect_jpeg(data)


@pytest.mark.parametrize(
    "mode,size,options",
    [
        ("RGB", (640, 640), {}),
        ("RGB", (333, 17), {"progressive": True}),
        ("L", (64, 480), {"optimize": True}),
        ("CMYK", (120, 90), {}),
        ("RGB", (200, 100), {"exif": b"Exif\x00\x00" + b"\x00" * 200, "icc_profile": b"\x01" * 3000}),
        ("RGB", (31, 29), {"quality": 5, "subsampling": 2, "comment": b"street view" * 20}),
    ],
)
def test_inspect_jpeg_reads_the_size_pillow_reads(mode, size, options):
    rng = np.random.default_rng(sum(size))
    buf = io.BytesIO()
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    Image.fromarray(pixels.squeeze() if mode == "L" else pixels, mode=mode).save(buf, "JPEG", **options)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as img:
        assert inspect_jpeg(data) == img.size == size


def test_signing_matches_googles_documented_example():
    # https://developers.google.com/maps/documentation/maps-static/digital-signature
    path = "/maps/api/geocode/json?address=New+York&client=clientID"
    assert url_signature(path, "vNIXE0xscrmjlyV-12Nj_BvUPaw=") == "chaRF2hTJKOScPr-RQCEhZbSzIE="


def test_signed_requests_are_verified_by_the_server():
    with StreetViewServer(api_key=FAKE_KEY, signing_secret=FAKE_SECRET, world=known_world()) as server:
        good = client_for(server, signing_secret=FAKE_SECRET)
        assert good.metadata(pano="P").pano_id == "P"
        assert good.image("P", 90, "64x64", 90, 0).width == 64
        assert all(r.raw_query.rsplit("&", 1)[1].startswith("signature=") for r in server.requests)
        other = "c3ZjbHVzdGVyLW90aGVyLXNlY3JldA=="
        with pytest.raises(FatalApiError, match="signature is invalid"):
            client_for(server, signing_secret=other).metadata(pano="P")
        with pytest.raises(FatalApiError, match="requires a signature"):
            client_for(server).image("P", 0, "64x64", 90, 0)


def test_a_malformed_secret_is_a_clear_error():
    with pytest.raises(SvclusterError, match="GOOGLE_MAPS_SIGNING_SECRET"):
        StreetViewClient("http://127.0.0.1:9", "k", signing_secret="not base64 !!")


def test_missing_key_and_bad_base_url_are_clear_errors():
    with pytest.raises(SvclusterError, match="GOOGLE_MAPS_API_KEY"):
        StreetViewClient("http://127.0.0.1:9", None)
    with pytest.raises(SvclusterError, match="SVCLUSTER_STREETVIEW_URL"):
        StreetViewClient("ftp://x/?key=zzz", "k")


def test_concurrent_requests_reuse_at_most_pool_size_connections(streetview_server):
    client = client_for(streetview_server, pool_size=4)

    async def forty():
        return await asyncio.gather(*(client.client.image(f"P{i}", 0, "64x64", 90, 0) for i in range(40)))

    assert len(client.loop.run_until_complete(forty())) == 40
    ports = {r.client_port for r in streetview_server.requests}
    assert len(streetview_server.requests) == 40 and 1 < len(ports) <= 4


def test_rate_limit_spaces_requests():
    limiter = RateLimiter(50)
    t0 = time.monotonic()
    for _ in range(11):
        limiter.wait()
    assert time.monotonic() - t0 >= 10 / 50 * 0.95
    unlimited = RateLimiter(0)
    t0 = time.monotonic()
    for _ in range(1000):
        unlimited.wait()
    assert time.monotonic() - t0 < 0.1


def test_stop_event_prevents_further_requests(streetview_server):
    stop = threading.Event()
    client = client_for(streetview_server, stop=stop)
    stop.set()
    with pytest.raises(Stopped):
        client.metadata(pano="P")
    assert streetview_server.counts["total"] == 0


def test_no_secret_in_errors_or_debug_logs(caplog):
    """Transport errors and the HTTP stack's debug lines can carry the URL: neither may show the key."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    caplog.set_level(logging.DEBUG)
    client = Blocking(StreetViewClient(f"http://127.0.0.1:{dead_port}/sv", FAKE_KEY, signing_secret=FAKE_SECRET, max_retries=1, backoff_base=0.001))
    with pytest.raises(RequestFailed) as err:
        client.metadata(pano="P")
    assert err.value.reason == "metadata cannot connect after 2 attempts"
    assert err.value.__cause__ is None and err.value.__context__ is None  # no chained aiohttp error
    with StreetViewServer(api_key=FAKE_KEY, signing_secret=FAKE_SECRET, world=known_world()) as server:
        server.add_fault(Fault("500", endpoint="image", times=1))
        ok = Blocking(StreetViewClient(server.base_url, FAKE_KEY, signing_secret=FAKE_SECRET, backoff_base=0.001))
        ok.image("P", 0, "64x64", 90, 0)
    text = caplog.text + str(err.value)
    assert "request retried" in caplog.text  # the retries were logged
    assert FAKE_KEY not in text and FAKE_SECRET not in text


def test_redact_masks_key_and_signature_parameters():
    url = f"http://h/x?pano=P&key={FAKE_KEY}&signature=abc-_=&fov=90"
    assert redact(url) == "http://h/x?pano=P&key=***&signature=***&fov=90"
    assert redact(f"boom {FAKE_KEY} boom", FAKE_KEY) == "boom *** boom"


# ---- the server's world and what the client keeps of the metadata ----------------------------
# Shapes from Google's metadata document, https://developers.google.com/maps/documentation/streetview/metadata:
# "date" is "YYYY-MM" (also just "YYYY", or absent), "copyright" names the owner, ZERO_RESULTS
# for a pano id means it was deleted ("Refresh deleted panorama IDs").

THIRD_PARTY = "CAoSLEFGMVFpcE94VEpTc0ExX2hwNExZQkRsdG9MZEFwOTNjdDNYZmwyQm1yNUU3"  # a user upload's id shape


def test_an_unknown_pano_id_answers_zero_results_and_a_404_image(streetview_server):
    client = client_for(streetview_server)
    with pytest.raises(NoImagery, match="ZERO_RESULTS"):
        client.metadata(pano="NEVER_REGISTERED_ID_xx")
    with pytest.raises(NoImagery, match="image HTTP 404"):
        client.image("NEVER_REGISTERED_ID_xx", 0, "64x64", 90, 0)
    assert client.metadata(pano="P").pano_id == "P"  # a registered one answers


def test_metadata_keeps_copyright_location_and_the_date_as_given(streetview_server):
    streetview_server.world.add(
        Panorama("YEAR_ONLY_pano_0000000", -33.1, -70.1, "2019"),
        Panorama("NO_DATE_pano_000000000", -33.2, -70.2, None),
        photosphere(THIRD_PARTY, -41.4689, -72.9411, "Ana Pérez", "2021-11"),
    )
    client = client_for(streetview_server)
    year = client.metadata(pano="YEAR_ONLY_pano_0000000")
    assert (year.capture_date, year.lat, year.lng, year.copyright, year.official) == ("2019", -33.1, -70.1, "© Google", True)
    undated = client.metadata(pano="NO_DATE_pano_000000000")
    assert undated.capture_date is None
    sphere = client.metadata(pano=THIRD_PARTY)
    assert (sphere.pano_id, sphere.copyright, sphere.official, sphere.capture_date) == (THIRD_PARTY, "© Ana Pérez", False, "2021-11")
    assert (sphere.lat, sphere.lng) == (-41.4689, -72.9411)


def test_the_server_leaves_out_a_missing_date_as_google_does(streetview_server):
    streetview_server.world.add(Panorama("NO_DATE_pano_000000000", -33.2, -70.2, None))
    url = f"{streetview_server.base_url}/metadata?pano=NO_DATE_pano_000000000&key={FAKE_KEY}"
    with urllib.request.urlopen(url) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "OK" and "date" not in doc and doc["copyright"] == "© Google"


def test_a_location_finds_the_nearest_known_panorama_within_50_m(streetview_server):
    world = streetview_server.world
    world.add(Panorama("NEAR_pano_000000000000", -33.45020, -70.66))  # ~22 m north of the point
    world.add(Panorama("FAR_pano_0000000000000", -33.45100, -70.66))  # ~111 m
    client = client_for(streetview_server)
    assert client.metadata(location=(-33.45, -70.66)).pano_id == "NEAR_pano_000000000000"
    world.delete("NEAR_pano_000000000000")
    derived = client.metadata(location=(-33.45, -70.66))
    assert derived.pano_id == location_pano_id(-33.45, -70.66)  # nothing within 50 m: one of its own
    assert client.metadata(pano=derived.pano_id).pano_id == derived.pano_id  # which exists from then on
    world.no_coverage(-20.0, -69.0)
    with pytest.raises(NoImagery, match="ZERO_RESULTS"):
        client.metadata(location=(-20.0, -69.0))


def test_a_retired_id_is_gone_and_its_location_finds_the_new_panorama(streetview_server):
    world = streetview_server.world
    world.add(Panorama("OLD_pano_0000000000000", -33.3, -70.3, "2014-02"))
    new = world.retire("OLD_pano_0000000000000", "NEW_pano_0000000000000", date="2023-09")
    client = client_for(streetview_server)
    with pytest.raises(NoImagery):
        client.metadata(pano="OLD_pano_0000000000000")
    found = client.metadata(location=(-33.3, -70.3))
    assert (found.pano_id, found.capture_date) == (new.pano_id, "2023-09") == ("NEW_pano_0000000000000", "2023-09")


def test_source_outdoor_is_sent_on_location_lookups_and_skips_photospheres(streetview_server):
    streetview_server.world.add(photosphere(THIRD_PARTY, -41.0, -73.0, "Ana Pérez"))
    client = client_for(streetview_server)
    assert client.metadata(location=(-41.0, -73.0)).pano_id == THIRD_PARTY
    outdoor = client.metadata(location=(-41.0, -73.0), source="outdoor")
    assert outdoor.pano_id != THIRD_PARTY and outdoor.official  # Google: photospheres are not "outdoor"
    client.metadata(pano="P", source="outdoor")  # not sent with a pano id
    sent = [r.params for r in streetview_server.requests]
    assert "source" not in sent[0] and sent[1]["source"] == "outdoor" and "source" not in sent[2]
    with pytest.raises(ValueError, match="source"):
        client.metadata(location=(-41.0, -73.0), source="indoor")


def test_the_server_refuses_an_unknown_source(streetview_server):
    url = f"{streetview_server.base_url}/metadata?location=-41,-73&source=indoor&key={FAKE_KEY}"
    with urllib.request.urlopen(url) as resp:
        assert json.loads(resp.read())["status"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    ("copyright", "official"),
    [("© Google", True), ("© 2024 Google", True), ("Copyright Google LLC", True), ("(c) Google Inc.", True),
     ("© Ana Pérez", False), ("© Google Maps Fan Club", False), ("", False), (None, False)],
)  # fmt: skip
def test_official_means_the_copyright_names_google_alone(copyright, official):
    assert is_official(copyright) is official
