"""A deterministic sample map of Chile, in any of the map formats, for the demo and tests.

Locations follow the country's length from the Atacama to Tierra del Fuego; each lies in one
of five latitude bands whose landscapes differ (the demo draws its scene images from them).
The same seed always gives the same map, byte for byte.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Band:
    """A stretch of Chile between two latitudes and the landscape it looks like."""

    name: str
    north: float
    south: float
    region_codes: tuple[str, ...]


BANDS: tuple[Band, ...] = (
    Band("desert", -17.6, -29.0, ("AP", "TA", "AN", "AT")),
    Band("valley", -29.0, -37.0, ("CO", "VS", "RM", "LI", "ML", "NB")),
    Band("forest", -37.0, -44.0, ("BI", "AR", "LR", "LL")),
    Band("steppe", -44.0, -51.0, ("AI",)),
    Band("ice", -51.0, -55.0, ("MA",)),
)

_PANO_ALPHABET = string.ascii_letters + string.digits + "-_"


def band_of(lat: float) -> Band:
    """The band a latitude falls in (the southernmost band takes everything further south)."""
    for band in BANDS:
        if lat >= band.south:
            return band
    return BANDS[-1]


def chile_lng(lat: float, rng: random.Random) -> float:
    """A longitude inside Chile's narrow strip at this latitude (roughly)."""
    if lat > -27:
        centre, width = -69.8, 1.2
    elif lat > -38:
        centre, width = -71.0, 1.0
    elif lat > -46:
        centre, width = -72.6, 1.0
    else:
        centre, width = -71.8, 2.4
    return centre + (rng.random() - 0.5) * width


def generate_locations(n: int = 1000, seed: int = 7, tagged_share: float = 0.3) -> list[dict[str, Any]]:
    """``n`` GeoGuessr-style locations spread over Chile; some carry a band tag as players do."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        lat = -17.6 - rng.random() * (55.0 - 17.6)
        band = band_of(lat)
        loc: dict[str, Any] = {
            "lat": lat,
            "lng": chile_lng(lat, rng),
            "panoId": "".join(rng.choice(_PANO_ALPHABET) for _ in range(22)),
            "heading": rng.randrange(360),
            "pitch": 0,
            "zoom": 0,
        }
        if rng.random() < tagged_share:
            loc["extra"] = {"tags": [band.name]}
        out.append(loc)
    return out


def to_format(locations: list[dict[str, Any]], fmt: str, name: str = "Chile sample", seed: int = 7) -> Any:
    """The same locations as a file of ``fmt``: geoguessr (bare array), customCoordinates
    (map-generator / map-making.app, with the panoId under extra) or vali."""
    rng = random.Random(seed + 1)
    if fmt == "geoguessr":
        return locations
    if fmt == "customCoordinates":
        coords = []
        for loc in locations:
            band = band_of(loc["lat"])
            extra = dict(loc.get("extra", {}))
            extra["panoId"] = loc["panoId"]
            extra["panoDate"] = f"20{rng.randrange(12, 25)}-{rng.randrange(1, 13):02d}"
            coords.append(
                {
                    "heading": loc["heading"],
                    "pitch": loc["pitch"],
                    "zoom": loc["zoom"],
                    "panoId": None,
                    "countryCode": "CL",
                    "stateCode": rng.choice(band.region_codes),
                    "lat": loc["lat"],
                    "lng": loc["lng"],
                    "extra": extra,
                }
            )
        return {"name": name, "customCoordinates": coords}
    if fmt == "vali":
        out = []
        for i, loc in enumerate(locations):
            band = band_of(loc["lat"])
            item = {
                "lat": loc["lat"],
                "lng": loc["lng"],
                "heading": loc["heading"],
                "panoId": loc["panoId"],
                "countryCode": "CL",
                "subdivisionCode": "CL-" + rng.choice(band.region_codes),
                "locationId": f"{i:08x}",
            }
            if "extra" in loc:
                item["extra"] = loc["extra"]
            out.append(item)
        return out
    raise ValueError(f"unknown map format {fmt!r}")
