"""A local HTTP server that speaks the Google Street View Static API, for tests, benchmarks and
the offline demo.

It serves, on ``127.0.0.1``, the two endpoints svcluster uses::

    <base>            the image:    pano= | location=, heading, size, fov, pitch, source, key,
                                    signature, return_error_code
    <base>/metadata   the metadata: pano= | location=, source, key, signature  ->  JSON
                                    {"status", "pano_id", "date", "location": {"lat", "lng"},
                                     "copyright"}

``base`` is ``http://127.0.0.1:<port>/maps/api/streetview`` (the same path as Google's), so
``SVCLUSTER_STREETVIEW_URL=<server.base_url>`` points svcluster at it.

Every parameter is checked the way Google does: a wrong or missing ``key`` is REQUEST_DENIED
(metadata) or HTTP 403 (image); with a signing secret configured, a missing or wrong
``signature`` is refused the same way; an out-of-range ``heading``/``size``/``fov``/``pitch``,
a ``source`` other than ``default``/``outdoor``, or a request with neither ``pano`` nor
``location`` is INVALID_REQUEST / HTTP 400. With ``return_error_code=true`` a panorama without
imagery answers HTTP 404; without it, HTTP 200 and a grey placeholder JPEG, as Google does (so a
client that forgets the flag stores junk).

What exists is explicit: a :class:`World` registry of panoramas, as Google's metadata document
describes them (https://developers.google.com/maps/documentation/streetview/metadata): pano ids
change, and ZERO_RESULTS for a pano id means it was deleted ("Refresh deleted panorama IDs":
look the location up again). So an id the world does not hold — never registered, deleted or
retired — answers ZERO_RESULTS (image: HTTP 404); a location finds the nearest registered
panorama within 50 m (``source=outdoor``: outdoor ones only, never a user's photosphere), else
a panorama derived from its coordinates (unless the world says the place has no coverage).
``date`` may be ``YYYY-MM``, ``YYYY`` or left out; ``copyright`` names the owner (``© Google``,
or a person for a user's photosphere with a long ``CAoS…`` id). Tests register what a map
stands on (``server.register_panoramas_of(objects)``, ``server.world.add(...)``) and say
exactly what was deleted or replaced (``world.delete``, ``world.retire``, ``world.no_coverage``).

Plug-in ``ImageProvider``
    ``(pano_id: str, heading: float, size: tuple[int, int], fov: float, pitch: float) -> bytes``
    returns the JPEG bytes of one view; ``size`` is ``(width, height)`` in pixels. It is called
    from the server's request threads, so it must be thread-safe. Default:
    ``synthetic_jpeg`` (a textured image, unique per pano and heading, cheap to produce).

Faults are injected with :class:`Fault` (latency, 429, 5xx, OVER_QUERY_LIMIT, REQUEST_DENIED,
INVALID_REQUEST, 403, truncated or non-image bodies, zero results, stalls, connection resets),
matched by endpoint and optionally pano id / heading, for a number of requests or forever.
Requests are counted per endpoint (``server.counts``) and, unless ``record=False``, kept in
``server.requests`` (method-less: endpoint + query parameters) for assertions.

Run it in a thread (``StreetViewServer(...).start()`` / ``.stop()``, or as a context manager)
or as its own process: ``python -m svcluster.tasks.fetch.server --latency 0.05 --panoramas-of map.json``
prints the base URL.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import math
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE_PATH = "/maps/api/streetview"
MAX_SIDE = 640

FAULT_KINDS = (
    "429",  # HTTP 429 Too Many Requests
    "500",  # HTTP 500
    "503",  # HTTP 503
    "over_query_limit",  # metadata: status OVER_QUERY_LIMIT; image: HTTP 429 with that text
    "unknown_error",  # metadata: status UNKNOWN_ERROR (Google: a retry may succeed)
    "request_denied",  # metadata: status REQUEST_DENIED; image: HTTP 403
    "invalid_request",  # metadata: status INVALID_REQUEST; image: HTTP 400
    "403",  # HTTP 403 with Google's text
    "zero_results",  # metadata: ZERO_RESULTS; image: 404 (or placeholder without return_error_code)
    "not_found",  # metadata: NOT_FOUND; image: 404
    "truncated",  # image: a complete HTTP response whose body is the first half of the JPEG
    "not_image",  # HTTP 200 with an HTML body
    "bad_json",  # metadata: HTTP 200 with a body that is not JSON
    "stall",  # sleep ``Fault.seconds`` (default 5 s) before answering
    "reset",  # close the connection without an answer
)


ImageProvider = Callable[[str, float, tuple[int, int], float, float], bytes]


@dataclass
class Fault:
    """A failure to inject into matching requests.

    ``endpoint`` is ``"metadata"``, ``"image"`` or ``"any"``; ``pano`` limits it to requests
    for that pano id (or, for ``location=`` requests, the exact ``location`` text);
    ``heading`` limits image faults to one heading. ``times`` is how many matching requests it
    hits (``None`` = every one). ``seconds`` is the stall length.
    """

    kind: str
    endpoint: str = "any"
    pano: str | None = None
    heading: float | None = None
    times: int | None = 1
    seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        if self.endpoint not in ("metadata", "image", "any"):
            raise ValueError(f"fault endpoint must be metadata, image or any, not {self.endpoint!r}")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (parameters decoded; the raw query kept for signing)."""

    endpoint: str  # metadata | image
    params: dict[str, str]
    raw_query: str
    status: int
    client_port: int  # the client's TCP port: one per connection, so reuse is visible


# ---- default plug-ins ----------------------------------------------------------------------


def location_pano_id(lat: float, lng: float) -> str:
    """The pano id of the panorama derived for a location: 22 url-safe characters like Google's."""
    return _derived_id(f"{lat:.5f},{lng:.5f}")


def pano_date(pano_id: str) -> str:
    """A stable fake capture month for a pano id (YYYY-MM)."""
    h = int.from_bytes(hashlib.sha256(pano_id.encode()).digest()[:4], "big")
    return f"{2010 + h % 15}-{1 + (h >> 8) % 12:02d}"


_base_lock = threading.Lock()


def _base_jpeg(width: int, height: int) -> bytes:
    """A textured JPEG of the given size (about 70 KB at 640x640, like Street View's), made once
    per size: the first requests of a size wait for one thread to draw it instead of all of
    them drawing it at once, which held the first answers back (docs/fetch.md, 'Speed and quota')."""
    with _base_lock:
        return _draw_base_jpeg(width, height)


@lru_cache(maxsize=16)
def _draw_base_jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    rng = random.Random(width * 10007 + height)
    noise = Image.frombytes("L", (width // 4, height // 4), rng.randbytes((width // 4) * (height // 4)))
    img = Image.merge("RGB", (noise, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise.rotate(180)))
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=55)
    return buf.getvalue()


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The JPEG with a COM segment right after SOI: still valid, different bytes per ``text``."""
    payload = text.encode("utf-8")[:60000]
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def synthetic_jpeg(pano_id: str, heading: float, size: tuple[int, int], fov: float, pitch: float) -> bytes:
    """The default image provider: one textured JPEG per size, made unique per view by a
    comment segment, so every (pano, heading, fov, pitch) has its own bytes at almost no CPU."""
    return with_comment(_base_jpeg(*size), f"svcluster-test pano={pano_id} heading={heading:g} fov={fov:g} pitch={pitch:g}")


@lru_cache(maxsize=4)
def placeholder_jpeg(width: int, height: int) -> bytes:
    """The grey 'no imagery' picture Google sends when return_error_code is not set."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (228, 227, 223)).save(buf, "JPEG", quality=70)
    return buf.getvalue()


# ---- the world: which panoramas exist ------------------------------------------------------

GOOGLE = "© Google"
NEAR_METRES = 50.0  # a location finds a registered panorama this close (Google: "nearest")
_CELL_DEGREES = 0.01  # the spatial index's cells: ~1.1 km of latitude


@dataclass(frozen=True)
class Panorama:
    """What the metadata endpoint says about a panorama.

    ``date`` is Google's ``date`` field as it comes: ``YYYY-MM``, just ``YYYY``, or None (the
    field is left out of the answer). ``copyright`` names the owner: ``© Google`` for Google's
    own coverage, ``© <a person's name>`` for a user's photosphere. ``outdoor`` is True for
    Street View's own outdoor imagery, False indoors, None where Google cannot tell (user
    photospheres): a ``source=outdoor`` lookup finds only True.
    """

    pano_id: str
    lat: float
    lng: float
    date: str | None = "2021-06"
    copyright: str = GOOGLE
    outdoor: bool | None = True


def photosphere(pano_id: str, lat: float, lng: float, owner: str, date: str | None = "2022-03") -> Panorama:
    """A third-party photosphere: ``© owner``, indoor or outdoor unknown (Google's own answer
    for user uploads); its id is usually a long ``CAoS…`` one."""
    return Panorama(pano_id, lat, lng, date, f"© {owner}", None)


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres (haversine, mean Earth radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


class World:
    """The panoramas the server knows, and how a location finds one — what exists, explicitly.

    By pano id (``pano=``): a registered panorama (or one derived earlier, below) answers; any
    other id — never registered, deleted, or retired — answers ZERO_RESULTS, as Google does
    for a deleted id. By location (``location=``): the nearest registered panorama within
    ``radius_m`` (with ``source=outdoor``, the nearest outdoor one); else, where ``derive`` is
    on and the point lies in no ``no_coverage`` area, a panorama derived from the coordinates
    (id ``location_pano_id(lat, lng)``, date ``pano_date``, ``© Google``), remembered so that
    its id answers from then on. Derived panoramas are never found by other locations, so
    which panorama a location resolves to does not depend on the order of requests.

    Thread-safe: request threads read it while a test registers or retires panoramas.
    """

    def __init__(self, panoramas: Iterable[Panorama] = (), *, derive: bool = True, radius_m: float = NEAR_METRES):
        self.derive = derive
        self.radius_m = radius_m
        self._lock = threading.Lock()
        self._known: dict[str, Panorama] = {}
        self._derived: dict[str, Panorama] = {}
        self._gone: set[str] = set()  # deleted or retired ids: never derived again
        self._cells: dict[tuple[int, int], list[Panorama]] = {}
        self._dark: list[tuple[float, float, float]] = []  # (lat, lng, radius_m) without coverage
        self.add(*panoramas)

    # ---- what exists -------------------------------------------------------------------------
    def add(self, *panoramas: Panorama) -> None:
        """Register panoramas (a known id is replaced)."""
        with self._lock:
            for p in panoramas:
                self._drop(p.pano_id)
                self._gone.discard(p.pano_id)
                self._known[p.pano_id] = p
                self._cells.setdefault(_cell(p.lat, p.lng), []).append(p)

    def add_objects(self, objects: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> list[Panorama]:
        """Register the panorama of every map object that names one, where the object stands:
        its ``panoId`` (else ``extra.panoId``), GeoGuessr's hex form decoded as fetch decodes
        it, ``pano_date`` as its date. Takes a list of objects or a map object holding
        ``customCoordinates``. Returns the panoramas registered."""
        from svcluster.tasks.ingest.locations import decode_pano_id

        if isinstance(objects, Mapping):
            objects = objects.get("customCoordinates") or []
        panos = []
        for obj in objects:
            extra = obj.get("extra") if isinstance(obj.get("extra"), Mapping) else {}
            pid = decode_pano_id(obj.get("panoId") or extra.get("panoId") or None)
            if pid:
                panos.append(Panorama(str(pid), float(obj["lat"]), float(obj["lng"]), pano_date(str(pid))))
        self.add(*panos)
        return panos

    def delete(self, pano_id: str) -> Panorama | None:
        """Forget a panorama: its id answers ZERO_RESULTS from now on. Returns what it was."""
        with self._lock:
            self._gone.add(pano_id)
            return self._drop(pano_id)

    def retire(self, pano_id: str, new_id: str | None = None, **changes: Any) -> Panorama:
        """Google replaced a panorama: the old id is gone (ZERO_RESULTS) and a new one stands at
        the same place (``changes`` may move it or change its date, copyright …). Returns the
        new panorama; its id defaults to one derived from the old."""
        old = self.get(pano_id)
        if old is None:
            raise KeyError(f"no panorama {pano_id!r} to retire")
        new = replace(old, pano_id=new_id or _derived_id(f"retired:{pano_id}"), **changes)
        self.delete(pano_id)
        self.add(new)
        return new

    def no_coverage(self, lat: float, lng: float, radius_m: float = NEAR_METRES) -> None:
        """No imagery within ``radius_m`` of a point: location lookups there answer ZERO_RESULTS
        (registered panoramas closer than that are still found)."""
        with self._lock:
            self._dark.append((lat, lng, radius_m))

    # ---- lookups -----------------------------------------------------------------------------
    def get(self, pano_id: str) -> Panorama | None:
        """The panorama with this id, or None (ZERO_RESULTS)."""
        return self._known.get(pano_id) or self._derived.get(pano_id)

    def near(self, lat: float, lng: float, source: str | None = None) -> Panorama | None:
        """The panorama a ``location=`` lookup finds (see the class docstring), or None."""
        outdoor_only = source == "outdoor"
        best, best_d = None, self.radius_m
        for p in self._candidates(lat, lng):
            if outdoor_only and p.outdoor is not True:
                continue
            d = distance_m(lat, lng, p.lat, p.lng)
            if d <= best_d:
                best, best_d = p, d
        if best is not None or not self.derive:
            return best
        if any(distance_m(lat, lng, dlat, dlng) <= r for dlat, dlng, r in self._dark):
            return None
        pid = location_pano_id(lat, lng)
        with self._lock:
            if pid in self._gone:
                return None
            pano = self._derived.get(pid)
            if pano is None:
                pano = self._derived[pid] = Panorama(pid, round(lat, 6), round(lng, 6), pano_date(pid))
        return pano

    def resolve(self, pano_id: str | None, location: tuple[float, float] | None, source: str | None = None) -> Panorama | None:
        """What a request finds: by pano id (``source`` does not apply) or by location."""
        if pano_id is not None:
            return self.get(pano_id)
        assert location is not None
        return self.near(*location, source=source)

    __call__ = resolve  # a world is also a resolver: ``world(pano_id, location)``

    def __contains__(self, pano_id: object) -> bool:
        return isinstance(pano_id, str) and self.get(pano_id) is not None

    def __len__(self) -> int:
        return len(self._known) + len(self._derived)

    # ---- internals ---------------------------------------------------------------------------
    def _drop(self, pano_id: str) -> Panorama | None:
        """Remove an id (lock held)."""
        old = self._known.pop(pano_id, None) or self._derived.pop(pano_id, None)
        if old is not None:
            cell = self._cells.get(_cell(old.lat, old.lng), [])
            self._cells[_cell(old.lat, old.lng)] = [p for p in cell if p.pano_id != pano_id]
        return old

    def _candidates(self, lat: float, lng: float) -> Iterator[Panorama]:
        """Registered panoramas in the cells within ``radius_m`` of the point."""
        ci, cj = _cell(lat, lng)
        lat_cell_m = 111_320 * _CELL_DEGREES
        rows = int(self.radius_m // lat_cell_m) + 1
        cols = min(int(self.radius_m // (lat_cell_m * max(math.cos(math.radians(lat)), 1e-6))) + 1, int(360 / _CELL_DEGREES))
        cells = self._cells
        for i in range(ci - rows, ci + rows + 1):
            for j in range(cj - cols, cj + cols + 1):
                yield from cells.get((i, j), ())


def _cell(lat: float, lng: float) -> tuple[int, int]:
    return math.floor(lat / _CELL_DEGREES), math.floor(lng / _CELL_DEGREES)


def _derived_id(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode()[:22]


# ---- signing -------------------------------------------------------------------------------


def url_signature(path_and_query: str, secret: str) -> str:
    """Google's URL signature: HMAC-SHA1 of the path+query with the url-safe base64 secret,
    url-safe base64 encoded."""
    key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    return base64.urlsafe_b64encode(hmac.new(key, path_and_query.encode(), hashlib.sha1).digest()).decode()


# ---- the server ----------------------------------------------------------------------------


class _Reject(Exception):
    """A request the API refuses: what to answer on each endpoint."""

    def __init__(self, meta_status: str, http_status: int, message: str):
        self.meta_status, self.http_status, self.message = meta_status, http_status, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as with Google
    # Headers and body leave in two writes: with Nagle's algorithm on, the body's last segment
    # waits for the client's delayed ACK (up to 40 ms on top of the injected latency).
    disable_nagle_algorithm = True
    server: "_HTTPServer"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.owner._handle(self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    owner: "StreetViewServer"


class StreetViewServer:
    """A Street View Static API look-alike on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        api_key: str | None = "test-key",
        signing_secret: str | None = None,
        image_provider: ImageProvider = synthetic_jpeg,
        world: World | None = None,
        latency: float = 0.0,
        port: int = 0,
        base_path: str = BASE_PATH,
        record: bool = True,
        *,
        metadata_resolver: World | None = None,  # the earlier name of ``world``
    ):
        self.api_key = api_key
        self.signing_secret = signing_secret
        self.image_provider = image_provider
        self.world = world if world is not None else metadata_resolver if metadata_resolver is not None else World()
        self.latency = latency
        self.base_path = base_path.rstrip("/")
        self.record = record
        self.counts: Counter[str] = Counter()
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def register_panoramas_of(self, objects: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> list[Panorama]:
        """Make the panoramas these map objects stand on exist (``World.add_objects``)."""
        return self.world.add_objects(objects)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "StreetViewServer":
        """Listen on 127.0.0.1 (port 0 = any free port) and serve in a daemon thread."""
        self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "StreetViewServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The value for SVCLUSTER_STREETVIEW_URL."""
        return f"http://127.0.0.1:{self.port}{self.base_path}"

    # ---- faults and counters -----------------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.requests.clear()

    def _take_fault(self, endpoint: str, pano: str | None, heading: float | None) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.endpoint not in ("any", endpoint):
                    continue
                if f.pano is not None and f.pano != pano:
                    continue
                if f.heading is not None and (heading is None or abs(f.heading - heading) > 1e-9):
                    continue
                if f.times is not None:
                    if f.times <= 0:
                        continue
                    f.times -= 1
                return f
        return None

    # ---- request handling --------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        if url.path == self.base_path:
            endpoint = "image"
        elif url.path == self.base_path + "/metadata":
            endpoint = "metadata"
        else:
            self._send(h, 404, b"not found", "text/plain")
            return
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with self._lock:
            self.counts[endpoint] += 1
            self.counts["total"] += 1
        if self.latency:
            time.sleep(self.latency)
        # Recorded before the answer goes out (status 0 until it is known), so a client that has
        # its response always finds its request here.
        index = None
        if self.record:
            with self._lock:
                index = len(self.requests)
                self.requests.append(RecordedRequest(endpoint, params, url.query, 0, h.client_address[1]))
        status = self._answer(h, endpoint, params, url)
        if index is not None:
            with self._lock:
                if index < len(self.requests):
                    self.requests[index] = replace(self.requests[index], status=status)

    def _answer(self, h: _Handler, endpoint: str, params: dict[str, str], url) -> int:
        meta = endpoint == "metadata"
        try:
            self._check_credentials(params, url)
            query = self._parse(endpoint, params)
        except _Reject as r:
            return self._reject(h, meta, r)
        pano_key = query["pano"] if query["pano"] is not None else params.get("location")
        fault = self._take_fault(endpoint, pano_key, query.get("heading"))
        if fault is not None:
            answered = self._apply_fault(h, meta, fault, query)
            if answered is not None:
                return answered
        pano = self.world.resolve(query["pano"], query["location"], query["source"])
        if pano is None:
            return self._no_imagery(h, meta, "ZERO_RESULTS", query, params)
        if meta:
            doc: dict[str, Any] = {"copyright": pano.copyright}
            if pano.date is not None:  # Google leaves the field out when it has no date
                doc["date"] = pano.date
            doc.update({"location": {"lat": pano.lat, "lng": pano.lng}, "pano_id": pano.pano_id, "status": "OK"})
            return self._json(h, 200, doc)
        data = self.image_provider(pano.pano_id, query["heading"], query["size"], query["fov"], query["pitch"])
        return self._send(h, 200, data, "image/jpeg")

    def _check_credentials(self, params: dict[str, str], url) -> None:
        if self.api_key is not None and params.get("key") != self.api_key:
            if not params.get("key"):
                raise _Reject("REQUEST_DENIED", 403, "You must use an API key to authenticate each request.")
            raise _Reject("REQUEST_DENIED", 403, "The provided API key is invalid.")
        if self.signing_secret is not None:
            signature = params.get("signature")
            marker = "&signature="
            if not signature or marker not in url.query or not url.query.endswith(marker + signature):
                raise _Reject("REQUEST_DENIED", 403, "This request requires a signature (the signature parameter must come last).")
            signed = url.path + "?" + url.query[: -len(marker + signature)]
            if not hmac.compare_digest(url_signature(signed, self.signing_secret), signature):
                raise _Reject("REQUEST_DENIED", 403, "Unable to authenticate the request. The URL signature is invalid.")

    def _parse(self, endpoint: str, params: dict[str, str]) -> dict:
        """Check the view parameters as Google does; returns them typed."""
        q: dict = {"pano": params.get("pano") or None, "location": None, "source": params.get("source") or None}
        if q["source"] not in (None, "default", "outdoor"):
            raise _Reject("INVALID_REQUEST", 400, "source must be default or outdoor.")
        if q["pano"] is None:
            text = params.get("location", "")
            try:
                lat_s, lng_s = text.split(",")
                lat, lng = float(lat_s), float(lng_s)
            except ValueError:
                raise _Reject("INVALID_REQUEST", 400, "Either pano or location (lat,lng) is required.") from None
            if not (-90 <= lat <= 90 and -180 <= lng <= 180):
                raise _Reject("INVALID_REQUEST", 400, "location is out of range.")
            q["location"] = (lat, lng)
        if endpoint == "metadata":
            return q
        try:
            q["heading"] = float(params.get("heading", "0"))
            w_s, h_s = params.get("size", "").lower().split("x")
            q["size"] = (int(w_s), int(h_s))
            q["fov"] = float(params.get("fov", "90"))
            q["pitch"] = float(params.get("pitch", "0"))
        except ValueError:
            raise _Reject("INVALID_REQUEST", 400, "heading, size (WxH), fov and pitch must be numbers.") from None
        w, hgt = q["size"]
        if not (0 <= q["heading"] <= 360):
            raise _Reject("INVALID_REQUEST", 400, "heading must be between 0 and 360.")
        if not (1 <= w <= MAX_SIDE and 1 <= hgt <= MAX_SIDE):
            raise _Reject("INVALID_REQUEST", 400, f"size must be at most {MAX_SIDE}x{MAX_SIDE}.")
        if not (10 <= q["fov"] <= 120):
            raise _Reject("INVALID_REQUEST", 400, "fov must be between 10 and 120.")
        if not (-90 <= q["pitch"] <= 90):
            raise _Reject("INVALID_REQUEST", 400, "pitch must be between -90 and 90.")
        q["return_error_code"] = params.get("return_error_code", "").lower() == "true"
        return q

    def _apply_fault(self, h: _Handler, meta: bool, f: Fault, query: dict) -> int | None:
        """Answer with the fault; ``None`` means carry on normally (after a stall)."""
        k = f.kind
        if k in ("429", "500", "503"):
            return self._send(h, int(k), f"injected {k}".encode(), "text/plain")
        if k == "over_query_limit":
            if meta:
                return self._json(h, 200, {"status": "OVER_QUERY_LIMIT", "error_message": "You have exceeded your rate-limit."})
            return self._send(h, 429, b"OVER_QUERY_LIMIT", "text/plain")
        if k == "unknown_error":
            if meta:
                return self._json(h, 200, {"status": "UNKNOWN_ERROR"})
            return self._send(h, 500, b"UNKNOWN_ERROR", "text/plain")
        if k == "request_denied":
            return self._reject(h, meta, _Reject("REQUEST_DENIED", 403, "The provided API key is invalid."))
        if k == "invalid_request":
            return self._reject(h, meta, _Reject("INVALID_REQUEST", 400, "Invalid request."))
        if k == "403":
            return self._send(h, 403, b"The Google Maps Platform server rejected your request.", "text/plain")
        if k in ("zero_results", "not_found"):
            return self._no_imagery(h, meta, k.upper(), query, {})
        if k == "not_image":
            return self._send(h, 200, b"<html><body>Service temporarily unavailable</body></html>", "text/html")
        if k == "bad_json":
            return self._send(h, 200, b"{\"status\": \"OK\", \"pano_", "application/json")
        if k == "truncated":
            if meta:
                return self._send(h, 200, b"{\"status\": \"OK\", \"pano_", "application/json")
            pano = self.world.resolve(query["pano"], query["location"], query["source"])
            pid = pano.pano_id if pano else "missing"
            data = self.image_provider(pid, query["heading"], query["size"], query["fov"], query["pitch"])
            return self._send(h, 200, data[: len(data) // 2], "image/jpeg")
        if k == "reset":
            # SO_LINGER 0: the close sends a TCP RST, as a dropped connection does.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return 0
        if k == "stall":
            time.sleep(f.seconds)
            return None
        raise AssertionError(k)

    def _no_imagery(self, h: _Handler, meta: bool, status: str, query: dict, params: dict) -> int:
        if meta:
            return self._json(h, 200, {"status": status})
        if query.get("return_error_code"):
            return self._send(h, 404, b"Sorry, we have no imagery here.", "text/plain")
        return self._send(h, 200, placeholder_jpeg(*query["size"]), "image/jpeg")

    def _reject(self, h: _Handler, meta: bool, r: _Reject) -> int:
        if meta:
            return self._json(h, 200, {"status": r.meta_status, "error_message": r.message})
        return self._send(h, r.http_status, f"The Google Maps Platform server rejected your request. {r.message}".encode(), "text/plain")

    def _json(self, h: _Handler, status: int, doc: dict) -> int:
        return self._send(h, status, json.dumps(doc).encode(), "application/json; charset=UTF-8")

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, content_type: str) -> int:
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
        return status


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; prints the base URL (one line) once listening."""
    p = argparse.ArgumentParser(description="A local Street View Static API look-alike on 127.0.0.1.")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    p.add_argument("--key", default="test-key", help="the API key to accept ('' = any)")
    p.add_argument("--signing-secret", default=None)
    p.add_argument("--panoramas-of", action="append", default=[], metavar="MAP.json",
                   help="make the panoramas of this map file's objects exist (repeatable); other pano ids answer ZERO_RESULTS")
    args = p.parse_args(argv)
    world = World()
    for path in args.panoramas_of:
        with open(path, encoding="utf-8") as f:
            world.add_objects(json.load(f))
    server = StreetViewServer(
        api_key=args.key or None, signing_secret=args.signing_secret, world=world, latency=args.latency, port=args.port, record=False
    ).start()
    _base_jpeg(MAX_SIDE, MAX_SIDE)  # the API's usual size drawn before the first request, not during it
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
