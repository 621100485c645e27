"""Links for people: a Google Maps URL that opens a place in Street View (report, compare, search)."""

from __future__ import annotations

import math
from urllib.parse import urlencode


def street_view_url(
    lat: float | None, lng: float | None, pano_id: str | None = None, heading: float | None = None,
    pitch: float | None = None, fov: float | None = None,
) -> str:  # fmt: skip
    """A Google Maps URL (Maps URLs, ``map_action=pano``) that opens Street View at this panorama
    (else the panorama nearest ``lat, lng``) looking at ``heading``."""
    query: dict[str, str] = {"api": "1", "map_action": "pano"}
    if lat is not None and lng is not None:
        query["viewpoint"] = f"{lat:.6f},{lng:.6f}"
    if pano_id:
        query["pano"] = pano_id
    for key, value in (("heading", heading), ("pitch", pitch), ("fov", fov)):
        if value is not None and math.isfinite(float(value)):
            query[key] = f"{float(value):g}"
    return "https://www.google.com/maps/@?" + urlencode(query, safe=",")
