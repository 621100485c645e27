"""Map files in every shape players use, parsed, validated and turned into ``locations`` rows.

Accepted shapes:

* a bare JSON array of locations — GeoGuessr-style (``lat, lng, heading, pitch, zoom, panoId,
  extra.tags``) or Vali output (``locationId``, ``subdivisionCode``, nulls omitted);
* an object ``{"name": ..., "customCoordinates": [...]}`` from map-generator, map-making.app or a
  GeoGuessr export (``panoId`` may be null with the real id under ``extra.panoId``;
  ``countryCode``, ``stateCode``, ``extra.panoDate``, ``imageDate``, ``links`` ...).

Every input object is kept verbatim (``raw``), so unknown fields survive and an export without
new tags gives the input back. A location's id comes from its panorama id when it has one,
else from its coordinates rounded to 1e-6 degrees (about 10 cm) — never from its position.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tasks.errors import MapFormatError

MAX_MAP_NAME = 200
COORD_DECIMALS = 6


@dataclass
class ParsedMap:
    """A validated map: its rows for the lake, and what the file looked like around them."""

    name: str
    source_file: str
    format: str  # "array" | "customCoordinates"
    dialect: str  # geoguessr | vali | map-generator | map-making.app
    envelope: dict[str, Any] | None  # the top-level object without its customCoordinates
    rows: pa.Table
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (index, first index)
    file_sha256: str = ""


def location_id(pano_id: str | None, lat: float, lng: float) -> str:
    """Stable id: from the panorama id when there is one, else from the rounded coordinates."""
    key = f"pano:{pano_id}" if pano_id else f"ll:{lat:.{COORD_DECIMALS}f},{lng:.{COORD_DECIMALS}f}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=8).hexdigest()


def validate_map_name(name: str) -> str:
    """A map name is free text but must stay printable, short and unambiguous in ``MAP@vN``."""
    if not name or not name.strip():
        raise MapFormatError("--map", "a map name cannot be empty")
    if len(name) > MAX_MAP_NAME:
        raise MapFormatError("--map", f"a map name is at most {MAX_MAP_NAME} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise MapFormatError("--map", "a map name cannot contain control characters")
    if "@" in name:
        raise MapFormatError("--map", "a map name cannot contain '@' (it separates MAP@vN)")
    if _unstorable(name):
        raise MapFormatError("--map", "a map name must be valid Unicode text (it holds a lone surrogate)")
    return name


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
    try:
        doc = json.loads(data)
    except UnicodeDecodeError as exc:
        raise MapFormatError(label, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise MapFormatError(label, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise MapFormatError(label, "not valid JSON: nested too deeply") from None
    envelope: dict[str, Any] | None = None
    if isinstance(doc, list):
        items, fmt = doc, "array"
    elif isinstance(doc, dict) and "customCoordinates" in doc:
        items, fmt = doc["customCoordinates"], "customCoordinates"
        if not isinstance(items, list):
            raise MapFormatError(label, "must be a list of locations", field="customCoordinates")
        envelope = {k: (None if k == "customCoordinates" else v) for k, v in doc.items()}
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
    rows, duplicates, dialect = build_rows(items, label, name, fmt)
    return ParsedMap(
        name=name,
        source_file=label,
        format=fmt,
        dialect=dialect,
        envelope=envelope,
        rows=rows,
        duplicates=duplicates,
        file_sha256=hashlib.sha256(data).hexdigest(),
    )


def _number(item: dict, key: str, label: str, i: int, required: bool, lo: float, hi: float) -> float | None:
    v = item.get(key)
    if v is None:
        if required:
            raise MapFormatError(label, "is missing" if key not in item else "is null", i, key)
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MapFormatError(label, f"must be a number, got {json.dumps(v)[:40]}", i, key)
    f = float(v)
    if not math.isfinite(f) or f < lo or f > hi:
        raise MapFormatError(label, f"must be between {lo:g} and {hi:g}, got {v}", i, key)
    return f


def _text(item: dict, key: str, label: str, i: int, where: str | None = None) -> str | None:
    v = item.get(key)
    if v is None or isinstance(v, str):
        return v
    raise MapFormatError(label, f"must be a string, got {json.dumps(v)[:40]}", i, where or key)


def build_rows(items: list, label: str, name: str, fmt: str) -> tuple[pa.Table, list[tuple[int, int]], str]:
    """Validate every item and build the locations rows (first occurrence of a duplicate wins)."""
    cols: dict[str, list] = {
        k: []
        for k in (
            "location_id", "position", "lat", "lng", "heading", "pitch", "zoom", "pano_id",
            "country_code", "region_code", "tags", "extra", "raw",
        )
    }
    seen: dict[str, int] = {}
    duplicates: list[tuple[int, int]] = []
    inf = math.inf
    vali = links = False
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MapFormatError(label, f"must be a JSON object, got {type(item).__name__}", i)
        bad = _bad_value(item, "")
        if bad:
            raise MapFormatError(label, "holds a value JSON text cannot carry (NaN, Infinity or a lone surrogate)", i, bad)
        lat = _number(item, "lat", label, i, True, -90, 90)
        lng = _number(item, "lng", label, i, True, -180, 180)
        heading = _number(item, "heading", label, i, False, -inf, inf)
        pitch = _number(item, "pitch", label, i, False, -90, 90)
        zoom = _number(item, "zoom", label, i, False, -inf, inf)
        extra = item.get("extra")
        if extra is not None and not isinstance(extra, dict):
            raise MapFormatError(label, "must be an object", i, "extra")
        pano = _text(item, "panoId", label, i)
        tags = None
        if extra:
            pano = pano or _text(extra, "panoId", label, i, "extra.panoId")
            tags = extra.get("tags")
            if tags is not None:
                if not isinstance(tags, list):
                    raise MapFormatError(label, "must be a list of strings", i, "extra.tags")
                for t in tags:
                    if not isinstance(t, str):
                        raise MapFormatError(label, f"must hold strings only, got {json.dumps(t)[:40]}", i, "extra.tags")
        country = _text(item, "countryCode", label, i)
        region = _text(item, "stateCode", label, i) or _text(item, "subdivisionCode", label, i)
        vali = vali or "locationId" in item or "subdivisionCode" in item
        links = links or "links" in item or "imageDate" in item
        lid = location_id(pano, lat, lng)  # type: ignore[arg-type]
        first = seen.get(lid)
        if first is not None:
            duplicates.append((i, first))
            continue
        seen[lid] = i
        cols["location_id"].append(lid)
        cols["position"].append(i)
        cols["lat"].append(lat)
        cols["lng"].append(lng)
        cols["heading"].append(heading)
        cols["pitch"].append(pitch)
        cols["zoom"].append(zoom)
        cols["pano_id"].append(pano)
        cols["country_code"].append(country)
        cols["region_code"].append(region)
        cols["tags"].append(tags)
        cols["extra"].append(dumps(extra) if extra is not None else None)
        try:
            cols["raw"].append(dumps(item))
        except ValueError as exc:  # NaN/Infinity somewhere among the unknown fields
            raise MapFormatError(label, f"holds a value JSON cannot carry: {exc}", i) from None
    n = len(cols["position"])
    table = pa.table(
        {
            "map": pa.array([name] * n, pa.string()),
            **{k: v for k, v in cols.items()},
        }
    )
    if fmt == "array":
        dialect = "vali" if vali else "geoguessr"
    else:
        dialect = "map-making.app" if links else "map-generator"
    return table, duplicates, dialect
