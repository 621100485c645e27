"""The Google Street View Static API client: free metadata first, then images by pano id.

Endpoints (``base`` = ``settings.streetview_url``, Google's by default)::

    <base>/metadata?pano=ID | location=LAT,LNG[&source=outdoor] &key=...[&signature=...]   free
    <base>?pano=ID&heading=H&size=WxH&fov=F&pitch=P&return_error_code=true&key=...  billed

Every answer is classified once, here, into what the fetch step records:

==========================================  ==========================================
answer                                      outcome
==========================================  ==========================================
metadata ``OK``                             :class:`Panorama` (pano id pinned, date,
                                            location, copyright)
metadata ``ZERO_RESULTS`` / ``NOT_FOUND``;  :class:`NoImagery` (no image is requested)
image HTTP 404
``OVER_QUERY_LIMIT``, ``UNKNOWN_ERROR``,    retried with exponential backoff and full
HTTP 429 / 5xx, timeouts, resets,           jitter (``Retry-After`` honoured), then
unreadable metadata                         :class:`RequestFailed` with the reason
``REQUEST_DENIED``, ``INVALID_REQUEST``,    :class:`FatalApiError` at once: a wrong key or
HTTP 400 / 401 / 403                        signature must not burn through a map
an image body that is not a whole JPEG      :class:`InvalidImage` (a ``RequestFailed``),
                                            never stored
==========================================  ==========================================

HTTP library: **aiohttp** (asyncio), one ``ClientSession`` whose connector keeps at most
``concurrency`` keep-alive connections to the API's origin; every request of a fetch runs as a
coroutine on one event loop thread. A thread per request in flight (the earlier urllib3
client) spent most of its CPU handing the GIL from thread to thread and stayed further from the
concurrency / latency ceiling; one event loop costs a fraction of the CPU per request, and
httpx's async client costs more (figures: docs/fetch.md, 'Why one event loop').
``requests`` has no async mode. aiohttp is already installed with s3fs (the S3 lake).

Secrets: the API key and the signature exist only inside the URL handed to aiohttp. Exceptions
from the HTTP stack can carry that URL, so none of their text is passed on: reasons name the
exception class and HTTP status only, every message built here goes through :func:`redact`,
and a logging filter redacts the HTTP libraries' own debug log lines.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit


from svcluster.tasks.errors import SvclusterError

if TYPE_CHECKING:  # aiohttp is imported on first use: every CLI command would pay its import (docs/fetch.md, 'Why one event loop')
    import aiohttp

log = logging.getLogger("svcluster.streetview")

RETRYABLE_STATUSES = ("OVER_QUERY_LIMIT", "UNKNOWN_ERROR")
NO_IMAGERY_STATUSES = ("ZERO_RESULTS", "NOT_FOUND")
FATAL_STATUSES = ("REQUEST_DENIED", "INVALID_REQUEST")
FATAL_HTTP = (400, 401, 403)

_SECRET_PARAM = re.compile(r"((?:key|signature|client)=)[^&\s'\"<>]+", re.IGNORECASE)


class FatalApiError(SvclusterError):
    """The API refused the credentials or the request itself: the whole step stops at once."""


class Stopped(Exception):
    """Another worker hit a fatal error; this request was not made."""


class NoImagery(Exception):
    """There is no Street View imagery for the request (recorded as ``no_imagery``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class RequestFailed(Exception):
    """A request that did not succeed, after the retries it deserved (recorded as ``failed``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class InvalidImage(RequestFailed):
    """An image answer whose body is not a whole, decodable JPEG."""


@dataclass(frozen=True)
class Panorama:
    """A panorama as the metadata endpoint describes it, values as given.

    ``capture_date`` is Google's ``date``: ``YYYY-MM``, just ``YYYY``, or None when the answer
    has none. ``lat``/``lng`` are where the panorama stands (not the point asked about).
    ``copyright`` names the owner (``© Google``, or a person for a user's photosphere).
    """

    pano_id: str
    capture_date: str | None
    lat: float | None
    lng: float | None
    copyright: str | None = None

    @property
    def official(self) -> bool:
        """Google's own coverage: see :func:`is_official`."""
        return is_official(self.copyright)


SOURCES = ("default", "outdoor")  # Google's ``source`` parameter of location lookups

# "© Google", "© 2024 Google", "Copyright Google LLC", "(c) Google Inc." — Google and nothing
# else. A photosphere's copyright names its author ("© Ana Pérez"); a long CAoS… id alone
# proves nothing either way, so the copyright decides.
_GOOGLE_COPYRIGHT = re.compile(r"(?:©|\(c\)|copyright)?\s*(?:\d{4}\s+)?google(?:\s+(?:llc|inc\.?))?", re.IGNORECASE)


def is_official(copyright: str | None) -> bool:
    """True when a panorama is Google's own coverage: its copyright names Google alone.
    A missing copyright is not proof: False."""
    return bool(copyright) and _GOOGLE_COPYRIGHT.fullmatch(copyright.strip()) is not None


@dataclass(frozen=True)
class StreetViewImage:
    """The bytes of one view exactly as received, with the size its JPEG header declares."""

    data: bytes
    width: int
    height: int


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with ``key=``/``signature=`` values and any of ``secrets`` replaced by ``***``."""
    out = _SECRET_PARAM.sub(r"\1***", text)
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    return out


class RedactingFilter(logging.Filter):
    """Redacts query secrets in log records of loggers that may print URLs (HTTP libraries at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_redacting_filter = RedactingFilter()
_URL_LOGGERS = ("aiohttp.client", "aiohttp.internal", "svcluster.streetview")


def _install_log_redaction() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if _redacting_filter not in logger.filters:
            logger.addFilter(_redacting_filter)


def url_signature(path_and_query: str, secret: str) -> str:
    """Google's URL signature: HMAC-SHA1 over the URL's path and query with the url-safe
    base64-decoded secret, encoded url-safe base64 (appended as the last ``signature=``)."""
    try:
        key = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        raise SvclusterError("GOOGLE_MAPS_SIGNING_SECRET is not url-safe base64 (copy it again from the Cloud console)") from None
    return base64.urlsafe_b64encode(hmac.new(key, path_and_query.encode(), hashlib.sha1).digest()).decode()


# Start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def inspect_jpeg(data: bytes) -> tuple[int, int]:
    """(width, height) of a whole JPEG, cheaply; raises InvalidImage otherwise.

    Whole means: the SOI and EOI markers (a truncated download lacks the EOI), quantisation
    tables, a frame header with a size, and a scan with entropy-coded data before the EOI — so
    headers without a picture, or an HTML page, are refused. The marker segments are walked
    without pixel decoding: a few microseconds, where a Pillow decode takes milliseconds of the
    CPU the fetch's event loop shares.
    """
    if len(data) < 128 or not data.startswith(b"\xff\xd8\xff"):
        kind = "empty" if not data else "not a JPEG"
        raise InvalidImage(f"image body {kind} ({len(data)} bytes)")
    end = len(data.rstrip(b"\x00\r\n"))
    if not data[:end].endswith(b"\xff\xd9"):
        raise InvalidImage(f"image truncated ({len(data)} bytes, no JPEG end marker)")
    i, size, tables = 2, None, False
    while i + 4 <= end:
        if data[i] != 0xFF:
            raise InvalidImage(f"image JPEG undecodable (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:  # end of image before any scan
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            raise InvalidImage(f"image JPEG undecodable (segment length {length} at byte {i})")
        if marker == 0xDB:
            tables = True
        elif marker in _SOF_MARKERS:
            if length < 8 or i + 9 > end:
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if width <= 0 or height <= 0:
                raise InvalidImage("image JPEG without a size")
            size = (width, height)
        elif marker == 0xDA:  # start of scan: the entropy-coded picture follows its header
            if size is None or not tables:
                raise InvalidImage("image JPEG undecodable (a scan without frame header or tables)")
            if i + 2 + length >= end - 2:
                raise InvalidImage("image JPEG undecodable (a scan without data)")
            return size
        i += 2 + length
    raise InvalidImage("image JPEG undecodable (no picture data)")


def is_placeholder(data: bytes, width: int, height: int) -> bool:
    """True for the flat light-grey picture Google serves where a view has no imagery.

    A textured photo compresses to more than 0.1 byte per pixel and is never opened; a small
    file is decoded at 1/8 scale in JPEG draft mode (well under a millisecond): the placeholder
    is one grey (a little text at most) with no colour.
    """
    if len(data) > 0.1 * width * height:
        return False
    from PIL import Image, ImageStat

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError):
        return False
    grey = rgb.convert("L")
    hist = grey.histogram()
    total = sum(hist)
    peak = max(range(256), key=hist.__getitem__)
    near = sum(hist[max(0, peak - 6): peak + 7])
    r, g, b = ImageStat.Stat(rgb).mean
    return near >= 0.97 * total and peak >= 150 and max(r, g, b) - min(r, g, b) < 12


class RateLimiter:
    """At most ``qps`` request starts per second across threads (0 = unlimited), evenly spaced."""

    def __init__(self, qps: float):
        self.interval = 1.0 / qps if qps and qps > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next start slot; returns how long to wait for it (seconds)."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        return slot - now

    def wait(self, stop: threading.Event | None = None) -> None:
        delay = self.reserve()
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)


class StreetViewClient:
    """An asyncio client of the two endpoints; counts the requests it makes.

    Use it on one event loop (``async with StreetViewClient(...) as client``, or ``aclose()``).
    ``stop`` is shared with the caller: once set (by a fatal error anywhere), every further
    call raises :class:`Stopped` without touching the network.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        signing_secret: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        pool_size: int = 16,
        qps: float = 0.0,
        stop: threading.Event | None = None,
    ):
        if not api_key:
            raise SvclusterError("no Street View API key: set GOOGLE_MAPS_API_KEY (or GSV_API_KEY)")
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SvclusterError(f"SVCLUSTER_STREETVIEW_URL must be an http(s) URL, not {redact(base_url)!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path
        self._key = api_key
        self._secret = signing_secret or None
        if self._secret:
            url_signature("/", self._secret)  # fail early on a malformed secret
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.pool_size = max(1, pool_size)
        self.stop = stop or threading.Event()
        self._limiter = RateLimiter(qps)
        self._session: aiohttp.ClientSession | None = None  # made on the loop of the first request
        self._slots: asyncio.Semaphore | None = None  # connection slots: made with the session, on its loop
        self.metadata_requests = 0
        self.image_requests = 0
        _install_log_redaction()

    @property
    def requests_made(self) -> int:
        return self.metadata_requests + self.image_requests

    async def __aenter__(self) -> "StreetViewClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            # One connector for the API's origin: at most pool_size keep-alive connections;
            # requests beyond that wait for a free one. No cookies, no redirects.
            connector = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size, ttl_dns_cache=300)
            self._slots = asyncio.Semaphore(self.pool_size)
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout),
                skip_auto_headers=("User-Agent",),
                headers={"User-Agent": "svcluster"},
            )
            # aiohttp resends an idempotent request once, silently, when a reused connection
            # drops: a billed image request the server may have received. Retries are ours to
            # make and count (``_request``); aiohttp has no public switch for this one.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    # ---- endpoints ---------------------------------------------------------------------------
    async def metadata(
        self, *, pano: str | None = None, location: tuple[float, float] | None = None, source: str | None = None
    ) -> Panorama:
        """The panorama for a pano id or the nearest one to a location (free; never billed).
        ``source`` (``default`` | ``outdoor``) is sent with a location lookup when given."""
        if pano:
            params: dict[str, str] = {"pano": pano}
        elif location is not None:
            params = {"location": f"{location[0]:.7f},{location[1]:.7f}"}
            if source is not None:
                if source not in SOURCES:
                    raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
                params["source"] = source
        else:
            raise ValueError("metadata needs a pano id or a location")
        doc = await self._request("metadata", self._path + "/metadata", params)  # status is OK
        pano_id = doc.get("pano_id")
        if not pano_id:
            raise RequestFailed("metadata OK without a pano_id")
        loc = doc.get("location") if isinstance(doc.get("location"), dict) else {}
        date, owner = doc.get("date"), doc.get("copyright")
        return Panorama(
            str(pano_id), str(date) if date else None, _number(loc.get("lat")), _number(loc.get("lng")), str(owner) if owner else None
        )

    async def image(self, pano: str, heading: float, size: str, fov: float, pitch: float) -> StreetViewImage:
        """One view of a panorama (billed). The bytes are checked to be a whole JPEG."""
        params = {
            "pano": pano,
            "heading": f"{heading:g}",
            "size": size,
            "fov": f"{fov:g}",
            "pitch": f"{pitch:g}",
            "return_error_code": "true",
        }
        data = await self._request("image", self._path, params)
        width, height = inspect_jpeg(data)
        if is_placeholder(data, width, height):
            raise NoImagery("image is the grey 'no imagery' placeholder")
        return StreetViewImage(data, width, height)

    # ---- transport ---------------------------------------------------------------------------
    def _signed_path(self, path: str, params: dict[str, str]) -> str:
        path_and_query = path + "?" + urlencode({**params, "key": self._key})
        if self._secret:
            path_and_query += "&signature=" + url_signature(path_and_query, self._secret)
        return path_and_query

    async def _pause(self, seconds: float) -> None:
        """Sleep, but raise Stopped as soon as the stop event is set."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.stop.is_set():
                raise Stopped()
            await asyncio.sleep(min(left, 0.05))
        if self.stop.is_set():
            raise Stopped()

    async def _request(self, endpoint: str, path: str, params: dict[str, str]):
        """GET with retries; metadata -> its JSON document (status OK), image -> body bytes."""
        # The query is already encoded (and signed over exactly these bytes): aiohttp must not
        # re-encode it.
        import aiohttp
        from yarl import URL

        url = URL(self._origin + self._signed_path(path, params), encoded=True)
        session = self._open_session()
        assert self._slots is not None  # made with the session
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            # A request waits for a free connection here, not inside aiohttp: once it has one,
            # the stop flag is read again, so no request queued behind a refusal is sent.
            async with self._slots:
                if self.stop.is_set():
                    raise Stopped()
                delay = self._limiter.reserve()
                if delay > 0:
                    await self._pause(delay)
                if endpoint == "metadata":
                    self.metadata_requests += 1
                else:
                    self.image_requests += 1
                retry_after: float | None = None
                try:
                    async with session.get(url, allow_redirects=False) as resp:
                        status, body = resp.status, await resp.read()
                        retry_header = resp.headers.get("Retry-After")
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    # Timeouts, refused/reset connections, truncated transfers. The exception's
                    # text can hold the URL (and so the key): only a reason from its class is kept.
                    last = f"{endpoint} {_transport_reason(exc)}"
                    outcome = None
                else:
                    # Classified before the slot is given back: a refusal sets the stop flag
                    # before the next request can take this connection.
                    if endpoint == "metadata":
                        outcome = self._classify_metadata(status, body)
                    else:
                        outcome = self._classify_image(status, body)
            if outcome is not None:
                if not isinstance(outcome, str):
                    return outcome
                last = outcome
                retry_after = _retry_after(retry_header)
            if attempt + 1 < attempts:
                delay = self._backoff(attempt, retry_after)
                log.debug("%s request retried in %.2fs: %s", endpoint, delay, last)
                await self._pause(delay)
        raise RequestFailed(f"{last} after {attempts} attempts" if attempts > 1 else last)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff: uniform(0, min(max, base * 2^attempt)), at least
        the server's Retry-After when it sent one (capped by ``backoff_max``)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = random.uniform(0, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _fatal(self, what: str, detail: str) -> FatalApiError:
        self.stop.set()  # no other thread starts a request from now on
        detail = redact(detail, self._key, self._secret).strip().rstrip(".")
        hint = " Check GOOGLE_MAPS_API_KEY, GOOGLE_MAPS_SIGNING_SECRET and that the Street View Static API is enabled for the key."
        return FatalApiError(f"Street View API refused the request ({what}){': ' + detail if detail else ''}.{hint}")

    def _classify_metadata(self, status: int, body: bytes) -> dict | str:
        """The JSON document of an OK answer; a retry reason (str); or raises."""
        if status in FATAL_HTTP:
            raise self._fatal(f"metadata HTTP {status}", _text(body))
        if status == 429 or status >= 500:
            return f"metadata HTTP {status}"
        if status == 404:
            raise NoImagery("metadata HTTP 404")
        if status != 200:
            raise RequestFailed(f"metadata HTTP {status}")
        try:
            doc = json.loads(body)
            api_status = str(doc["status"])
        except (ValueError, KeyError, TypeError):
            return "metadata answer is not JSON"
        if api_status == "OK":
            return doc
        if api_status in NO_IMAGERY_STATUSES:
            raise NoImagery(api_status)
        if api_status in RETRYABLE_STATUSES:
            return api_status
        if api_status in FATAL_STATUSES:
            raise self._fatal(api_status, str(doc.get("error_message", "")))
        raise RequestFailed(f"metadata status {redact(api_status)[:60]}")

    def _classify_image(self, status: int, body: bytes) -> bytes | str:
        if status == 200:
            return body
        if status in FATAL_HTTP:
            raise self._fatal(f"image HTTP {status}", _text(body))
        if status == 404:
            raise NoImagery("image HTTP 404")
        if status == 429 or status >= 500:
            return f"image HTTP {status}"
        raise RequestFailed(f"image HTTP {status}")


def _number(value: object) -> float | None:
    """A coordinate of the metadata's ``location``, or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(body: bytes, limit: int = 200) -> str:
    return body[:limit].decode("utf-8", "replace").replace("\n", " ")


def _transport_reason(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return "timeout"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError, OSError)):
        return "connection dropped"
    return type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
