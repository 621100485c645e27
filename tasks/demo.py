"""The offline demo: the whole pipeline on a generated map of Chile, with no network and no key.

``run_demo`` writes the deterministic 1000-location Chile sample (``tasks/sample.py``) as a
map-making.app file, starts a Street View–compatible server on 127.0.0.1 that draws each view
from its location's latitude band (``tasks/scenes.py``), points the real fetch client at it with
a throw-away key, and runs the real Prefect pipeline: ingest, fetch, embed (the weight-free
``baseline`` model unless another is asked for), cluster, compare with the map's own band tags,
export. Everything lands in one output folder; nothing outside it is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.sample import generate_locations, to_format
from tasks.scenes import SceneImages
from tasks.streetview_server import Panorama, StreetViewServer

DEMO_MAP = "chile-demo"
DEMO_KEY = "svcluster-demo-key"  # accepted only by the demo's own server on 127.0.0.1
DEMO_SIZE = "224x224"  # CLIP's own input size
NO_IMAGERY_SHARE = 0.01  # a few panoramas have no imagery, as on a real map


@dataclass
class DemoResult:
    """Where the demo's outputs are, and the pipeline's own result."""

    out_dir: str
    map_file: str
    lake: str
    export_file: str
    summary_file: str
    locations: int
    seconds: float
    pipeline: Any  # flows.pipeline.PipelineResult


class DemoPanoramas:
    """The demo server's metadata resolver: every sample panorama exists where its location is,
    except a deterministic ~1% with no imagery; lookups by coordinates find nothing."""

    def __init__(self, locations: list[Mapping[str, Any]], no_imagery_share: float = NO_IMAGERY_SHARE):
        self.panos = {str(loc["panoId"]): (float(loc["lat"]), float(loc["lng"])) for loc in locations}
        self.no_imagery_share = no_imagery_share

    def missing(self, pano_id: str) -> bool:
        h = int.from_bytes(hashlib.sha256(f"no-imagery|{pano_id}".encode()).digest()[:4], "big")
        return h / 2**32 < self.no_imagery_share

    def __call__(self, pano_id: str | None, location: tuple[float, float] | None) -> Panorama | None:
        if pano_id is None or pano_id not in self.panos or self.missing(pano_id):
            return None
        lat, lng = self.panos[pano_id]
        h = int.from_bytes(hashlib.sha256(pano_id.encode()).digest()[:2], "big")
        return Panorama(pano_id, lat, lng, f"{2012 + h % 12}-{1 + (h >> 4) % 12:02d}")


def write_demo_map(path: Path, n: int = 1000, seed: int = 7) -> list[dict[str, Any]]:
    """The Chile sample as a map-making.app file at ``path``; returns its locations."""
    locations = generate_locations(n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = to_format(locations, "customCoordinates", name="Chile demo", seed=seed)
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return locations


@contextmanager
def demo_streetview(locations: list[Mapping[str, Any]]) -> Iterator[StreetViewServer]:
    """The scene server on 127.0.0.1, with this process's Street View settings pointed at it
    (and restored afterwards)."""
    server = StreetViewServer(
        api_key=DEMO_KEY,
        image_provider=SceneImages.for_locations(locations),
        metadata_resolver=DemoPanoramas(list(locations)),
        record=False,
    )
    overrides = {"SVCLUSTER_STREETVIEW_URL": None, "GOOGLE_MAPS_API_KEY": DEMO_KEY, "GSV_API_KEY": None, "GOOGLE_MAPS_SIGNING_SECRET": None}
    saved = {k: os.environ.get(k) for k in overrides}
    with server:
        overrides["SVCLUSTER_STREETVIEW_URL"] = server.base_url
        try:
            for k, v in overrides.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def run_demo(
    out_dir: str | Path = "svcluster-demo",
    *,
    lake: str | None = None,
    model: str = "baseline",
    locations: int = 1000,
    k: int = 5,
    size: str = DEMO_SIZE,
    runner: Any = None,
) -> DemoResult:
    """Run the whole pipeline offline on the Chile sample; outputs under ``out_dir``.

    ``lake`` defaults to ``out_dir/lake``; ``runner`` is a ``flows.runner.RunnerOptions``.
    Prefect must be prepared (``flows.prefect_env.prepare_prefect``) before this is called.
    """
    from flows.params import ClusterParams, EmbedParams, FetchParams
    from flows.pipeline import pipeline
    from flows.runner import RunnerOptions

    started = time.perf_counter()
    out = Path(out_dir).resolve()
    map_file = out / f"{DEMO_MAP}.json"
    sample = write_demo_map(map_file, locations)
    lake_uri = lake or str(out / "lake")
    export_file = out / f"{DEMO_MAP}.tagged.json"
    summary_file = out / f"{DEMO_MAP}.summary.md"
    with demo_streetview(sample):
        result = pipeline(
            map_file=str(map_file),
            lake=lake_uri,
            map_name=DEMO_MAP,
            fetch=FetchParams(size=size, qps=0),  # a local server: no rate limit to respect
            embed=EmbedParams(model=model),
            cluster=ClusterParams(k=k),
            export_out=str(export_file),
            summary_out=str(summary_file),
            runner=runner or RunnerOptions(),
        )
    return DemoResult(
        out_dir=str(out),
        map_file=str(map_file),
        lake=result.lake,
        export_file=result.export.out,
        summary_file=result.summary_file or str(summary_file),
        locations=locations,
        seconds=round(time.perf_counter() - started, 1),
        pipeline=result,
    )
