"""Map files in every shape players use, parsed, validated and turned into ``locations`` rows.

Accepted shapes:

* a bare JSON array of locations — GeoGuessr-style (``lat, lng, heading, pitch, zoom, panoId,
  extra.tags``) or Vali output (``locationId``, ``subdivisionCode``, nulls omitted);
* an object ``{"name": ..., "customCoordinates": [...]}`` from map-generator, map-making.app or a
  GeoGuessr export (``panoId`` may be null with the real id under ``extra.panoId``;
  ``countryCode``, ``stateCode``, ``extra.panoDate``, ``imageDate``, ``links`` ...).

A map file is a list of **objects**; every one becomes a row, in order, kept verbatim (``raw``),
duplicates included, so unknown fields survive and an export without new tags gives the input
back object for object. Objects on one panorama (or, without a pano id, on the same coordinates
rounded to 1e-6 degrees, about 10 cm) are one **place**: ``location_id`` names the place, from
the decoded pano id when there is one — never from a position. Exact duplicate objects and
objects sharing a place are reported, never dropped (``docs/maps.md`` says what real maps hold).

Pano ids come as Google writes them (22 characters, or long ``CAoS…`` ids of third-party
photospheres) or hex-encoded as GeoGuessr's game API writes them (44 hex digits that decode to
the 22 ASCII characters); ``pano_id`` keeps the file's text, ``pano_id_decoded`` is what
requests use.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from svcluster.tasks.errors import MapFormatError

MAX_MAP_NAME = 200
COORD_DECIMALS = 6  # location_ids rounds coordinates to this many decimals (about 10 cm)


@dataclass
class ParsedMap:
    """A validated map: its rows for the lake, and what the file looked like around them."""

    name: str
    source_file: str
    format: str  # "array" | "customCoordinates"
    dialect: str  # geoguessr | vali | map-generator | map-making.app
    envelope: dict[str, Any] | None  # the top-level object without its customCoordinates
    rows: pa.Table
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # exact copies: (index, first index)
    shared: list[tuple[int, int]] = field(default_factory=list)  # other objects on an earlier one's place
    places: int = 0
    file_sha256: str = ""


_PANO_TEXT = re.compile(r"[A-Za-z0-9_-]+")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")


def decode_pano_id(text: str | None) -> str | None:
    """The pano id a request uses: GeoGuessr's hex encoding (an even run of at least 32 hex
    digits whose bytes are an ASCII pano id) decoded, anything else as written. Ordinary ids
    have 22 characters and ``CAoS…`` ids contain letters past ``f``, so neither is hex."""
    if not text or not _HEX.fullmatch(text):
        return text
    decoded = bytes.fromhex(text).decode("latin-1")
    return decoded if _PANO_TEXT.fullmatch(decoded) else text


def location_id(pano_id: str | None, lat: float, lng: float) -> str:
    """Stable id: from the panorama id when there is one, else from the rounded coordinates."""
    return location_ids([pano_id], [lat], [lng])[0]


def location_ids(pano_ids: list[str | None], lats: list[float], lngs: list[float]) -> list[str]:
    """``location_id`` of many places at once: 16 hex digits of blake2b of ``pano:<id>`` (the
    decoded id), or of ``ll:<lat>,<lng>`` rounded to 6 decimals when there is no panorama id."""
    blake2b, places = hashlib.blake2b, COORD_DECIMALS
    keys = (f"pano:{p}" if p else f"ll:{la:.{places}f},{ln:.{places}f}" for p, la, ln in zip(pano_ids, lats, lngs))
    return [blake2b(k.encode("utf-8"), digest_size=8).hexdigest() for k in keys]


def validate_map_name(name: str) -> str:
    """A map name is free text but must stay printable, short and unambiguous in ``MAP@vN``.

    It never becomes a path (keyed files are named by its hash), but it does reach file
    names chosen by users, terminals and ``MAP@vN``: so no path separators, no ``.``/``..``,
    no control or bidirectional-override characters, no surrounding spaces.
    """
    if not name or not name.strip():
        raise MapFormatError("--map", "a map name cannot be empty")
    if len(name) > MAX_MAP_NAME:
        raise MapFormatError("--map", f"a map name is at most {MAX_MAP_NAME} characters")
    if _unstorable(name):
        raise MapFormatError("--map", "a map name must be valid Unicode text (it holds a lone surrogate)")
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI_CONTROLS for c in name):
        raise MapFormatError("--map", "a map name cannot contain control characters")
    if "@" in name:
        raise MapFormatError("--map", "a map name cannot contain '@' (it separates MAP@vN)")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise MapFormatError("--map", "a map name cannot contain '/' or '\\' or be '.' or '..'")
    if name != name.strip():
        raise MapFormatError("--map", "a map name cannot start or end with a space")
    return name


# Characters that reorder how text is displayed (they can make a name look like another).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unstorable(text: str) -> bool:
    """True when text cannot be written as UTF-8 (a lone surrogate, e.g. JSON's ``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad_value(value: Any, path: str) -> str | None:
    """The dotted path of the first value JSON text or UTF-8 cannot carry (NaN, Infinity, lone
    surrogate), or None when the whole value is storable."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, str):
        return path if _unstorable(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}" if path else str(k)
            if _unstorable(str(k)):
                return sub.encode("utf-8", "backslashreplace").decode("utf-8")
            found = _bad_value(v, sub)
            if found:
                return found.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        for v in value:
            found = _bad_value(v, path)
            if found:
                return found
    return None


def read_map_file(path: str | Path, name: str | None = None) -> ParsedMap:
    """Read and validate a map file; raises MapFormatError naming file, item and field."""
    path = Path(path)
    label = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MapFormatError(label, f"cannot read the file: {exc.strerror or exc}") from None
    return parse_map_bytes(data, label, name or path.stem)


def parse_map_bytes(data: bytes, label: str, name: str) -> ParsedMap:
    """Parse a map file's bytes (see the module docstring for the shapes)."""
    validate_map_name(name)
    with paused_gc():  # millions of acyclic dicts: the cycle collector would only rescan them
        doc, clean = load_json(data, label)
        envelope: dict[str, Any] | None = None
        if isinstance(doc, list):
            items, fmt = doc, "array"
        elif isinstance(doc, dict) and (key := _locations_key(doc, label)):
            items, fmt = doc[key], key
            if not isinstance(items, list):
                raise MapFormatError(label, "must be a list of locations", field=key)
            envelope = {k: (None if k == key else v) for k, v in doc.items()}
            bad = _bad_value(envelope, "")
            if bad:
                raise MapFormatError(label, "holds a value JSON text cannot carry (NaN, Infinity or a lone surrogate)", field=bad)
        else:
            shape = type(doc).__name__ if not isinstance(doc, dict) else "an object without customCoordinates"
            raise MapFormatError(
                label,
                f"expected a JSON array of locations or an object with 'customCoordinates', got {shape}",
            )
        if not items:
            raise MapFormatError(label, "the map has no locations")
        try:
            rows, dialect = build_rows(items, label, name, fmt, clean=clean, consume=True)
        except RecursionError:
            raise MapFormatError(label, "not valid JSON: nested too deeply") from None
    duplicates, shared, places = find_duplicates(rows)
    return ParsedMap(
        name=name,
        source_file=label,
        format=fmt,
        dialect=dialect,
        envelope=envelope,
        rows=rows,
        duplicates=duplicates,
        shared=shared,
        places=places,
        file_sha256=hashlib.sha256(data).hexdigest(),
    )


# The top-level keys that hold a map object's locations: map-generator, map-making.app and
# GeoGuessr's own map objects use ``customCoordinates``; GeoGuessr's map editor names the list
# ``coordinates`` in some exports.
LOCATION_KEYS = ("customCoordinates", "coordinates")


def _locations_key(doc: dict[str, Any], label: str) -> str | None:
    """Which key of a map object holds its locations; a region map is refused by name."""
    mode = doc.get("mode")
    for key in LOCATION_KEYS:
        if isinstance(doc.get(key), list) and (doc[key] or mode != "regions"):
            return key
    if mode == "regions" or (isinstance(doc.get("regions"), list) and doc["regions"]):
        raise MapFormatError(
            label,
            "is a region map (mode 'regions': polygons, no locations), not a location map; "
            "generate locations inside its regions first (e.g. with map-generator) and ingest that file",
        )
    for key in LOCATION_KEYS:
        if key in doc:
            return key
    return None


def find_duplicates(rows: pa.Table) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
    """What a map holds twice, as (index, first index) pairs: exact copies of an earlier object,
    and other objects on an earlier object's place (two bus stops snapped to one panorama); and
    how many places the map has. Both kinds stay in the map: they are reported, never dropped.

    ``rows`` are in position order (row i is the object at position i)."""
    first_place: dict[str, int] = {}
    place_objects: dict[str, dict[bytes, int]] = {}  # only places with more than one object
    exact: list[tuple[int, int]] = []
    shared: list[tuple[int, int]] = []
    raw_column = rows.column("raw")
    for batch in rows.select(["position", "location_id", "raw"]).to_batches():
        positions, ids = batch.column(0).to_pylist(), batch.column(1).to_pylist()
        fresh = dict(zip(ids, positions))
        if len(fresh) == len(ids) and first_place.keys().isdisjoint(fresh):
            first_place.update(fresh)  # the usual case: every object on a place of its own
            continue
        raws = batch.column(2)
        for j, (pos, lid) in enumerate(zip(positions, ids)):
            first = first_place.setdefault(lid, pos)
            if first == pos:
                continue
            seen = place_objects.get(lid)
            if seen is None:
                seen = place_objects[lid] = {_digest(raw_column[first].as_py()): first}
            digest = _digest(raws[j].as_py())
            if digest in seen:
                exact.append((pos, seen[digest]))
            else:
                seen[digest] = pos
                shared.append((pos, first))
    return exact, shared, len(first_place)


def _digest(raw: str) -> bytes:
    return hashlib.blake2b(raw.encode("utf-8"), digest_size=16).digest()


@contextmanager
def paused_gc() -> Iterator[None]:
    """Switch Python's cycle collector off for a block that builds many acyclic objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Every digit becomes b"0", everything else b" ": a run of 19 zeros marks a number too long
# for a 64-bit integer, which orjson would silently turn into a float.
_DIGITS_TO_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _orjson_limits_depth() -> bool:
    """orjson before 3.10 recursed without limit and crashes on absurdly nested input."""
    major, minor = (int(x) for x in orjson.__version__.split(".")[:2])
    return (major, minor) >= (3, 10)


FAST_PARSER = _orjson_limits_depth()


def load_json(data: bytes, label: str) -> tuple[Any, bool]:
    """The parsed document, and whether every value in it is known to be storable as is.

    The fast parser (orjson) refuses NaN, Infinity, numbers that overflow a double, lone
    surrogates and absurd nesting, so a document it accepts needs no further checks. Anything
    it refuses, and any file with a 19-digit number (an integer orjson would round), goes
    through the standard library, which keeps big integers exact and words errors precisely;
    such a document is then checked value by value (the flag is False).
    """
    if FAST_PARSER and data.translate(_DIGITS_TO_ZERO).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data), False
    except UnicodeDecodeError as exc:
        raise MapFormatError(label, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise MapFormatError(label, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MapFormatError(label, "not valid JSON: nested too deeply") from None


def dump_json(value: Any) -> str:
    """Compact JSON text of a parsed value (big integers and deep nesting included).

    orjson's bytes keep a generously sized buffer; decoding right away keeps memory to the text.
    """
    try:
        return orjson.dumps(value).decode("utf-8")
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, or nesting orjson refuses
        return _STDLIB_DUMPS(value)


def dump_json_many(values: list[Any]) -> list[str | None]:
    """``dump_json`` of each value (None stays None), in one tight loop when orjson can."""
    dumps = orjson.dumps
    try:
        return [None if v is None else dumps(v).decode("utf-8") for v in values]
    except orjson.JSONEncodeError:
        return [None if v is None else dump_json(v) for v in values]


_STDLIB_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _number(item: dict, key: str, label: str, i: int, required: bool, lo: float, hi: float) -> float | None:
    """The item's number ``key`` as a float, or a MapFormatError saying what is wrong with it."""
    v = item.get(key)
    if v is None:
        if required:
            raise MapFormatError(label, "is missing" if key not in item else "is null", i, key)
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MapFormatError(label, f"must be a number, got {json.dumps(v)[:40]}", i, key)
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f) or f < lo or f > hi:
        raise MapFormatError(label, f"must be between {lo:g} and {hi:g}, got {str(v)[:40]}", i, key)
    return f


def _text(item: dict, key: str, label: str, i: int, where: str | None = None) -> str | None:
    v = item.get(key)
    if v is None or isinstance(v, str):
        return v
    raise MapFormatError(label, f"must be a string, got {json.dumps(v)[:40]}", i, where or key)


def _finite(v: Any) -> bool:
    """True for a JSON number (not a bool) that is a finite double."""
    if type(v) is float:
        return v - v == 0.0
    return type(v) is int and -1e308 < v < 1e308


CHUNK_ITEMS = 100_000


def build_rows(
    items: list, label: str, name: str, fmt: str, clean: bool = False, consume: bool = False
) -> tuple[pa.Table, str]:
    """Validate every item and build the locations rows: one per object, in input order.

    ``clean`` says the items came from the strict parser, so no value needs checking for NaN,
    Infinity or lone surrogates: such items are validated a column at a time (``_fast_batch``).
    Anything that fails those checks, and every item of a file that is not clean, goes through
    ``_checked_batch``, which looks at one item at a time and raises the error naming the item
    and the field. With ``consume`` each chunk of ``items`` is dropped once it became rows, so a
    huge map never sits in memory twice.
    """
    batches: list[pa.RecordBatch] = []
    vali = links = False
    for start in range(0, len(items), CHUNK_ITEMS):
        chunk = items[start : start + CHUNK_ITEMS]
        batch = _fast_batch(chunk, start) if clean else None
        if batch is None:
            batch = _checked_batch(chunk, start, label, clean)
        vali = vali or any("locationId" in x or "subdivisionCode" in x for x in chunk)
        links = links or any("links" in x or "imageDate" in x for x in chunk)
        batches.append(batch)
        del chunk
        if consume:
            items[start : start + CHUNK_ITEMS] = [None] * min(CHUNK_ITEMS, len(items) - start)
    table = pa.Table.from_batches(batches, schema=ROWS_SCHEMA)
    table = table.add_column(0, "map", pa.array([name] * table.num_rows, pa.string()))
    if fmt == "array":
        dialect = "vali" if vali else "geoguessr"
    else:
        dialect = "map-making.app" if links else "map-generator"
    return table, dialect


def _pano_columns(own: list[str | None], extras: list[dict | None]) -> tuple[list, list, list]:
    """Each object's pano id as written (``panoId``, else ``extra.panoId`` when the top level is
    null, empty or missing, as map-making.app writes it), the id decoded for requests, and the
    field it came from."""
    written: list[str | None] = []
    fields: list[str | None] = []
    for p, e in zip(own, extras):
        if p:
            written.append(p)
            fields.append("panoId")
        elif e and e.get("panoId"):
            written.append(e.get("panoId"))
            fields.append("extra.panoId")
        else:
            written.append(None)
            fields.append(None)
    return written, [decode_pano_id(p) if type(p) is str else p for p in written], fields


# The locations columns a map file gives (``map`` is added for the whole table).
ROWS_SCHEMA = pa.schema(
    [
        ("location_id", pa.string()),
        ("position", pa.int64()),
        ("lat", pa.float64()),
        ("lng", pa.float64()),
        ("heading", pa.float64()),
        ("pitch", pa.float64()),
        ("zoom", pa.float64()),
        ("pano_id", pa.string()),
        ("pano_id_decoded", pa.string()),
        ("pano_id_field", pa.string()),
        ("country_code", pa.string()),
        ("region_code", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("extra", pa.string()),
        ("raw", pa.string()),
    ]
)

_NUMBER = {float, int}
_NUMBER_OR_NULL = {float, int, type(None)}
_TEXT_OR_NULL = {str, type(None)}


def _numbers(values: list, lo: float, hi: float, optional: bool) -> pa.Array | None:
    """The values as float64 if every one is a finite JSON number in [lo, hi] (or null when
    ``optional``); None when any is not, so the caller looks at each item to say which."""
    if not set(map(type, values)) <= (_NUMBER_OR_NULL if optional else _NUMBER):
        return None
    try:
        arr = pa.array(values, pa.float64())
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None
    if arr.null_count == len(arr):
        return arr
    if not pc.all(pc.is_finite(arr)).as_py():
        return None
    low, high = pc.min_max(arr).values()
    if low.as_py() < lo or high.as_py() > hi:
        return None
    return arr


def _fast_batch(items: list, start: int) -> pa.RecordBatch | None:
    """Rows for strictly parsed items, checked a column at a time; None if any check fails.

    Accepts exactly what ``_checked_batch`` accepts (a failing check hands the chunk to it).
    """
    if not all(type(x) is dict for x in items):
        return None
    inf = math.inf
    lat = _numbers([x.get("lat") for x in items], -90, 90, optional=False)
    lng = _numbers([x.get("lng") for x in items], -180, 180, optional=False)
    heading = _numbers([x.get("heading") for x in items], -inf, inf, optional=True)
    pitch = _numbers([x.get("pitch") for x in items], -90, 90, optional=True)
    zoom = _numbers([x.get("zoom") for x in items], -inf, inf, optional=True)
    if lat is None or lng is None or heading is None or pitch is None or zoom is None:
        return None
    extras = [x.get("extra") for x in items]
    own_panos = [x.get("panoId") for x in items]
    countries = [x.get("countryCode") for x in items]
    states = [x.get("stateCode") for x in items]
    if not (
        set(map(type, extras)) <= {dict, type(None)}
        and set(map(type, own_panos)) <= _TEXT_OR_NULL
        and set(map(type, countries)) <= _TEXT_OR_NULL
        and set(map(type, states)) <= _TEXT_OR_NULL
    ):
        return None
    panos, decoded, pano_fields = _pano_columns(own_panos, extras)
    regions = [s if s else x.get("subdivisionCode") for s, x in zip(states, items)]
    tags = [e.get("tags") if e else None for e in extras]
    if not (
        set(map(type, panos)) <= _TEXT_OR_NULL
        and set(map(type, regions)) <= _TEXT_OR_NULL
        and set(map(type, tags)) <= {list, type(None)}
        and {type(t) for ts in tags if ts for t in ts} <= {str}
    ):
        return None
    ids = location_ids(decoded, lat.to_pylist(), lng.to_pylist())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(range(start, start + len(items)), pa.int64()),
            lat,
            lng,
            heading,
            pitch,
            zoom,
            pa.array(panos, pa.string()),
            pa.array(decoded, pa.string()),
            pa.array(pano_fields, pa.string()),
            pa.array(countries, pa.string()),
            pa.array(regions, pa.string()),
            pa.array(tags, pa.list_(pa.string())),
            pa.array(dump_json_many(extras), pa.string()),
            pa.array(dump_json_many(items), pa.string()),
        ],
        schema=ROWS_SCHEMA,
    )


def _checked_batch(items: list, start: int, label: str, clean: bool) -> pa.RecordBatch:
    """Rows for items checked one by one: the first bad value raises a MapFormatError naming
    its item (index in the file) and field. A value that passes the quick inline checks is
    valid; one that fails them goes to ``_number``/``_text``, which say what is wrong."""
    location_ids: list[str] = []
    positions: list[int] = []
    lats: list[float] = []
    lngs: list[float] = []
    headings: list[float | None] = []
    pitches: list[float | None] = []
    zooms: list[float | None] = []
    panos: list[str | None] = []
    decoded: list[str | None] = []
    pano_fields: list[str | None] = []
    countries: list[str | None] = []
    regions: list[str | None] = []
    tag_lists: list[list[str] | None] = []
    extras: list[str | None] = []
    raws: list[str] = []
    inf = math.inf
    for i, item in enumerate(items, start):
        if type(item) is not dict:
            raise MapFormatError(label, f"must be a JSON object, got {type(item).__name__}", i)
        if not clean:
            bad = _bad_value(item, "")
            if bad:
                raise MapFormatError(label, "holds a value JSON text cannot carry (NaN, Infinity or a lone surrogate)", i, bad)
        get = item.get
        lat = get("lat")
        if not ((type(lat) is float or type(lat) is int) and -90 <= lat <= 90):
            lat = _number(item, "lat", label, i, True, -90, 90)
        lng = get("lng")
        if not ((type(lng) is float or type(lng) is int) and -180 <= lng <= 180):
            lng = _number(item, "lng", label, i, True, -180, 180)
        heading = get("heading")
        if heading is not None:
            heading = float(heading) if _finite(heading) else _number(item, "heading", label, i, False, -inf, inf)
        pitch = get("pitch")
        if pitch is not None and not ((type(pitch) is float or type(pitch) is int) and -90 <= pitch <= 90):
            pitch = _number(item, "pitch", label, i, False, -90, 90)
        zoom = get("zoom")
        if zoom is not None:
            zoom = float(zoom) if _finite(zoom) else _number(item, "zoom", label, i, False, -inf, inf)
        extra = get("extra")
        if extra is not None and type(extra) is not dict:
            raise MapFormatError(label, "must be an object", i, "extra")
        pano = get("panoId")
        if pano is not None and type(pano) is not str:
            pano = _text(item, "panoId", label, i)
        pano_field = "panoId" if pano else None
        tags = None
        if extra:
            if not pano:
                pano = extra.get("panoId")
                if pano is not None and type(pano) is not str:
                    pano = _text(extra, "panoId", label, i, "extra.panoId")
                pano_field = "extra.panoId" if pano else None
            tags = extra.get("tags")
            if tags is not None:
                if type(tags) is not list:
                    raise MapFormatError(label, "must be a list of strings", i, "extra.tags")
                for t in tags:
                    if type(t) is not str:
                        raise MapFormatError(label, f"must hold strings only, got {json.dumps(t)[:40]}", i, "extra.tags")
        country = get("countryCode")
        if country is not None and type(country) is not str:
            country = _text(item, "countryCode", label, i)
        region = get("stateCode")
        if region is not None and type(region) is not str:
            region = _text(item, "stateCode", label, i)
        if not region:
            region = get("subdivisionCode")
            if region is not None and type(region) is not str:
                region = _text(item, "subdivisionCode", label, i)
        pano = pano or None
        request_pano = decode_pano_id(pano)
        location_ids.append(location_id(request_pano, lat, lng))
        positions.append(i)
        lats.append(lat)
        lngs.append(lng)
        headings.append(heading)
        pitches.append(pitch)
        zooms.append(zoom)
        panos.append(pano)
        decoded.append(request_pano)
        pano_fields.append(pano_field)
        countries.append(country)
        regions.append(region)
        tag_lists.append(tags)
        extras.append(None if extra is None else dump_json(extra))
        raws.append(dump_json(item))
    string = pa.string()
    return pa.RecordBatch.from_arrays(
        [
            pa.array(location_ids, string),
            pa.array(positions, pa.int64()),
            pa.array(lats, pa.float64()),
            pa.array(lngs, pa.float64()),
            pa.array(headings, pa.float64()),
            pa.array(pitches, pa.float64()),
            pa.array(zooms, pa.float64()),
            pa.array(panos, string),
            pa.array(decoded, string),
            pa.array(pano_fields, string),
            pa.array(countries, string),
            pa.array(regions, string),
            pa.array(tag_lists, pa.list_(string)),
            pa.array(extras, string),
            pa.array(raws, string),
        ],
        schema=ROWS_SCHEMA,
    )
